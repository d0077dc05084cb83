//! Configuration of a [`KafkaSource`](crate::KafkaSource).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::TokenProvider;
use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, OAuthBearer, Result};

/// The port of the Kafka endpoint of an Event Hubs namespace.
pub const EVENT_HUBS_KAFKA_PORT: u16 = 9093;

/// The SASL user name Event Hubs expects when the password is a connection string.
pub const EVENT_HUBS_SASL_USERNAME: &str = "$ConnectionString";

/// librdkafka properties this crate sets itself, because at-least-once delivery depends on them.
/// Setting them in [`KafkaSourceConfig::properties`] is an error.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "client.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "enable.partition.eof",
];

/// How Kafka header values become the event's `Properties` (and IoT Hub / Event Hubs
/// `SystemProperties`).
///
/// Kafka headers are bytes. Kafka producers usually write UTF-8 text; Event Hubs hands the
/// application properties of events sent over AMQP or HTTPS (IoT Hub routes, Azure SDKs) to
/// Kafka consumers as AMQP-encoded values (a type code, then the data). Whichever is tried first,
/// the other is tried when the first does not apply; a value that is neither is left out (and
/// counted in a `debug` trace), never guessed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderValues {
    /// UTF-8 text first (a JSON string), else an AMQP-encoded value (default).
    #[default]
    Utf8,
    /// An AMQP-encoded value first (strings, symbols, integers, floating point numbers, booleans,
    /// timestamps as RFC 3339 text, UUIDs), else UTF-8 text. For event hubs fed over AMQP or
    /// HTTPS, where a one-byte UTF-8 value such as `A` would otherwise be ambiguous.
    Amqp,
}

/// Settings of a [`KafkaSource`](crate::KafkaSource): where to connect, what to read, which
/// consumer group to join.
///
/// Consumers that share a [`group_id`](Self::group_id) split the partitions of the topics among
/// them; each partition is read by one consumer of the group at a time, in order.
///
/// `Debug` never prints secret values: [`secret_properties`](Self::secret_properties) are always
/// redacted, and so are [`properties`](Self::properties) whose name mentions a password, secret
/// or key.
#[derive(Clone)]
pub struct KafkaSourceConfig {
    /// `host:port` of one or more brokers, comma-separated (`bootstrap.servers`).
    pub bootstrap_servers: String,
    /// The topics (event hubs) to read.
    pub topics: Vec<String>,
    /// The consumer group (`group.id`); its committed offsets say where reading resumes.
    pub group_id: String,
    /// The client id shown in broker logs and metrics (`client.id`); default `carebridge-medtech`.
    pub client_id: Option<String>,
    /// Further librdkafka properties (`security.protocol`, `auto.offset.reset`,
    /// `session.timeout.ms`, ...). Applied after the defaults, so they override them, except
    /// the [`RESERVED_PROPERTIES`]. Default: `auto.offset.reset=earliest`.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties holding secrets (`sasl.password`, `ssl.key.password`); never
    /// printed.
    pub secret_properties: BTreeMap<String, SecretString>,
    /// How header values are read (default [`HeaderValues::Utf8`]).
    pub header_values: HeaderValues,
    /// When set, [`next_event`](carebridge_medtech_mapping::pipeline::EventSource::next_event)
    /// ends the current run (returns `None`) once no new message arrived for this long while
    /// delivered messages are still unacknowledged, so that
    /// [`Pipeline::run`](carebridge_medtech_mapping::pipeline::Pipeline::run) finishes and
    /// acknowledges them instead of holding them until the next message.
    /// [`KafkaSource::run_pipeline`](crate::KafkaSource::run_pipeline) starts the next run.
    /// Default: 500 ms.
    pub idle_flush: Option<Duration>,
    /// SASL `OAUTHBEARER` tokens from a credential (Entra ID sign-in to Event Hubs, see
    /// [`event_hubs_entra`](Self::event_hubs_entra)); sets `sasl.mechanism=OAUTHBEARER`.
    pub oauth_bearer: Option<OAuthBearer>,
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            topics: Vec::new(),
            group_id: String::new(),
            client_id: None,
            properties: BTreeMap::from([("auto.offset.reset".to_owned(), "earliest".to_owned())]),
            secret_properties: BTreeMap::new(),
            header_values: HeaderValues::Utf8,
            idle_flush: Some(Duration::from_millis(500)),
            oauth_bearer: None,
        }
    }
}

impl KafkaSourceConfig {
    /// Sets a librdkafka property: names that look like secrets (password, secret, key,
    /// token, SASL configuration) go to [`secret_properties`](Self::secret_properties), the
    /// rest to [`properties`](Self::properties).
    pub fn set_property(&mut self, name: &str, value: String) {
        let name = name.trim().to_owned();
        if is_secret_name(&name) {
            self.properties.remove(&name);
            self.secret_properties
                .insert(name, SecretString::from(value));
        } else {
            self.secret_properties.remove(&name);
            self.properties.insert(name, value);
        }
    }
}

fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key",
        "token",
        "sasl.oauthbearer.config",
        "sasl.jaas",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl fmt::Debug for KafkaSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_name(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        let secret: BTreeMap<&str, &str> = self
            .secret_properties
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("KafkaSourceConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("client_id", &self.client_id)
            .field("properties", &properties)
            .field("secret_properties", &secret)
            .field("header_values", &self.header_values)
            .field("idle_flush", &self.idle_flush)
            .field("oauth_bearer", &self.oauth_bearer)
            .finish()
    }
}

impl KafkaSourceConfig {
    /// A plain (`PLAINTEXT`) configuration reading `topics` from `bootstrap_servers` as member
    /// of the consumer group `group_id`; add `security.protocol` and friends to
    /// [`properties`](Self::properties) for TLS or SASL.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        group_id: impl Into<String>,
    ) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            group_id: group_id.into(),
            ..Self::default()
        }
    }

    /// Azure Event Hubs through its Kafka endpoint: broker
    /// `<namespace>.servicebus.windows.net:9093` (or `<namespace>:9093` when `namespace` is
    /// already a host name, for sovereign clouds), topic `event_hub`, consumer group
    /// `consumer_group`, `SASL_SSL` with mechanism `PLAIN`, user `$ConnectionString` and the
    /// namespace (or event hub) connection string as password. Sets Microsoft's recommended
    /// `metadata.max.age.ms`/`connections.max.idle.ms` of 180 s (Azure closes idle connections
    /// after 240 s) and TCP keep-alive, and reads header values as AMQP first
    /// ([`HeaderValues::Amqp`]).
    ///
    /// Needs the crate feature `ssl` (on by default).
    pub fn event_hubs(
        namespace: &str,
        event_hub: impl Into<String>,
        consumer_group: impl Into<String>,
        connection_string: SecretString,
    ) -> Self {
        let mut config = Self::event_hubs_common(namespace, event_hub, consumer_group);
        config
            .properties
            .insert("sasl.mechanism".to_owned(), "PLAIN".to_owned());
        config.properties.insert(
            "sasl.username".to_owned(),
            EVENT_HUBS_SASL_USERNAME.to_owned(),
        );
        config
            .secret_properties
            .insert("sasl.password".to_owned(), connection_string);
        config
    }

    /// Azure Event Hubs through its Kafka endpoint with Microsoft Entra ID sign-in: as
    /// [`event_hubs`](Self::event_hubs), but SASL `OAUTHBEARER` with tokens of `credential` for
    /// the scope `https://<namespace host>/.default`, refreshed before they expire. Give the
    /// identity the **Azure Event Hubs Data Receiver** role on the event hub or namespace.
    ///
    /// The source fetches tokens on the tokio runtime it is created in; use a multi-thread
    /// runtime.
    pub fn event_hubs_entra(
        namespace: &str,
        event_hub: impl Into<String>,
        consumer_group: impl Into<String>,
        credential: Arc<dyn TokenProvider>,
    ) -> Self {
        let mut config = Self::event_hubs_common(namespace, event_hub, consumer_group);
        let host = event_hubs_host(namespace);
        config.oauth_bearer = Some(OAuthBearer {
            credential,
            scope: OAuthBearer::event_hubs_scope(&host),
        });
        config
    }

    fn event_hubs_common(
        namespace: &str,
        event_hub: impl Into<String>,
        consumer_group: impl Into<String>,
    ) -> Self {
        let host = event_hubs_host(namespace);
        let mut config = Self::new(
            format!("{host}:{EVENT_HUBS_KAFKA_PORT}"),
            [event_hub.into()],
            consumer_group,
        );
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("metadata.max.age.ms", "180000"),
            ("connections.max.idle.ms", "180000"),
            ("socket.keepalive.enable", "true"),
        ] {
            config.properties.insert(k.to_owned(), v.to_owned());
        }
        config.header_values = HeaderValues::Amqp;
        config
    }

    /// Sets one librdkafka property (builder style).
    #[must_use]
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Checks the settings without connecting.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting: no bootstrap servers, no topic or an empty
    /// topic name, no group id, or a [reserved](RESERVED_PROPERTIES) property set by hand.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config(
                "bootstrap_servers",
                "at least one host:port is required",
            ));
        }
        if self.topics.is_empty() {
            return Err(Error::config("topics", "at least one topic is required"));
        }
        if let Some(i) = self.topics.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::config(format!("topics[{i}]"), "empty topic name"));
        }
        if self.group_id.trim().is_empty() {
            return Err(Error::config(
                "group_id",
                "a consumer group is required (offsets are committed per group)",
            ));
        }
        for name in self.properties.keys().chain(self.secret_properties.keys()) {
            if RESERVED_PROPERTIES.contains(&name.as_str()) {
                return Err(Error::config(
                    format!("properties.{name}"),
                    "set by the source itself (use the dedicated field, or rely on the at-least-once defaults)",
                ));
            }
        }
        Ok(())
    }

    /// The librdkafka client configuration.
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        self.validate()?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap_servers.trim())
            .set("group.id", &self.group_id)
            .set(
                "client.id",
                self.client_id.as_deref().unwrap_or("carebridge-medtech"),
            )
            // At-least-once: an offset is stored only when the pipeline acknowledges the
            // message (after persistence); auto commit only ever commits stored offsets.
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("enable.partition.eof", "false");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, v) in &self.secret_properties {
            c.set(k, v.expose_secret());
        }
        if self.oauth_bearer.is_some() {
            // The token comes from the source's context, not from properties.
            c.set("sasl.mechanism", "OAUTHBEARER");
        }
        Ok(c)
    }
}

/// The host of an Event Hubs namespace: `<namespace>.servicebus.windows.net`, or `namespace`
/// itself when it is already a host name (sovereign clouds).
pub fn event_hubs_host(namespace: &str) -> String {
    let namespace = namespace.trim();
    if namespace.contains('.') {
        namespace.to_owned()
    } else {
        format!("{namespace}.servicebus.windows.net")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_property_routes_secrets() {
        let mut c = KafkaSourceConfig::default();
        c.set_property("sasl.password", "hunter2".to_owned());
        c.set_property(" session.timeout.ms ", "6000".to_owned());
        assert!(!c.properties.contains_key("sasl.password"));
        assert!(c.secret_properties.contains_key("sasl.password"));
        assert_eq!(
            c.properties.get("session.timeout.ms").map(String::as_str),
            Some("6000")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn event_hubs_settings_and_redacted_debug() {
        let cs = "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0";
        let c = KafkaSourceConfig::event_hubs("ns1", "devices", "medtech", SecretString::from(cs));
        assert_eq!(c.bootstrap_servers, "ns1.servicebus.windows.net:9093");
        assert_eq!(c.topics, vec!["devices".to_owned()]);
        assert_eq!(c.group_id, "medtech");
        assert_eq!(c.properties["security.protocol"], "SASL_SSL");
        assert_eq!(c.properties["sasl.mechanism"], "PLAIN");
        assert!(c.oauth_bearer.is_none());
        assert_eq!(c.properties["sasl.username"], "$ConnectionString");
        assert_eq!(c.header_values, HeaderValues::Amqp);
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("sasl.password"), Some(cs));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("SharedAccessKey"), "{debug}");
        assert!(debug.contains("sasl.password"), "{debug}");

        let sovereign = KafkaSourceConfig::event_hubs(
            "ns2.servicebus.chinacloudapi.cn",
            "d",
            "g",
            SecretString::from("x"),
        );
        assert_eq!(
            sovereign.bootstrap_servers,
            "ns2.servicebus.chinacloudapi.cn:9093"
        );
    }

    #[test]
    fn debug_redacts_secret_looking_plain_properties() {
        let c = KafkaSourceConfig::new("b:9092", ["t"], "g")
            .with_property("ssl.key.password", "hunter2")
            .with_property("sasl.password", "hunter3");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter"), "{debug}");
    }

    #[test]
    fn validation_names_the_field() {
        let field = |c: KafkaSourceConfig| match c.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(
            field(KafkaSourceConfig::new(" ", ["t"], "g")),
            "bootstrap_servers"
        );
        assert_eq!(
            field(KafkaSourceConfig::new("b:1", Vec::<String>::new(), "g")),
            "topics"
        );
        assert_eq!(
            field(KafkaSourceConfig::new("b:1", ["t", ""], "g")),
            "topics[1]"
        );
        assert_eq!(field(KafkaSourceConfig::new("b:1", ["t"], "")), "group_id");
        assert_eq!(
            field(
                KafkaSourceConfig::new("b:1", ["t"], "g")
                    .with_property("enable.auto.offset.store", "true")
            ),
            "properties.enable.auto.offset.store"
        );
        KafkaSourceConfig::new("b:1", ["t"], "g")
            .validate()
            .unwrap();
    }

    #[test]
    fn event_hubs_with_entra_uses_oauthbearer_and_the_namespace_scope() {
        let credential: Arc<dyn TokenProvider> =
            Arc::new(carebridge_auth::StaticToken::new("never-shown"));
        let c =
            KafkaSourceConfig::event_hubs_entra("contoso", "telemetry", "carebridge", credential);
        assert_eq!(c.bootstrap_servers, "contoso.servicebus.windows.net:9093");
        assert_eq!(c.properties["security.protocol"], "SASL_SSL");
        assert!(!c.properties.contains_key("sasl.username"));
        assert!(c.secret_properties.is_empty());
        let bearer = c.oauth_bearer.as_ref().unwrap();
        assert_eq!(
            bearer.scope,
            "https://contoso.servicebus.windows.net/.default"
        );
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert!(!format!("{c:?}").contains("never-shown"));
        let sovereign = KafkaSourceConfig::event_hubs_entra(
            "contoso.servicebus.chinacloudapi.cn",
            "t",
            "g",
            Arc::new(carebridge_auth::StaticToken::new("x")),
        );
        assert_eq!(
            sovereign.oauth_bearer.unwrap().scope,
            "https://contoso.servicebus.chinacloudapi.cn/.default"
        );
    }
}
