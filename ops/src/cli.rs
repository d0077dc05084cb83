//! Flags, environment variables and the TOML configuration file.
//!
//! Precedence, highest first: a flag on the command line, its environment variable, the key in
//! the configuration file, the flag's default.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, Parser};

use crate::{Error, Exit, Result};

/// Configuration files larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The environment variable of a flag: `PREFIX_` and the long name in upper snake case
/// (`--batch-size` of `MEDTECH_INGEST` is `MEDTECH_INGEST_BATCH_SIZE`).
pub fn env_name(prefix: &str, long: &str) -> String {
    format!("{prefix}_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// Gives every long flag of `cmd` and of its subcommands that has no environment variable yet
/// the variable [`env_name`]`(prefix, long)`; `--help` and `--version` excepted.
pub fn with_env(cmd: Command, prefix: &str) -> Command {
    let prefix = prefix.to_owned();
    let p = prefix.clone();
    cmd.mut_args(move |arg| {
        let name = arg
            .get_long()
            .filter(|l| !matches!(*l, "help" | "version"))
            .map(|l| env_name(&p, l));
        match name {
            Some(name) if arg.get_env().is_none() => arg.env(name),
            _ => arg,
        }
    })
    .mut_subcommands(move |sub| with_env(sub, &prefix))
}

/// A TOML configuration file whose keys are the long flag names of a binary
/// (`batch-size = 100`; `batch_size` is accepted too), arrays for repeatable flags
/// (`topic = ["a", "b"]`), booleans for switches.
#[derive(Debug, Clone)]
pub struct CliConfig {
    path: PathBuf,
    values: toml::Table,
}

impl CliConfig {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`Error::ConfigRead`] when it cannot be read, [`Error::ConfigSyntax`] when it is not
    /// TOML or larger than 1 MiB.
    pub fn load(path: &Path) -> Result<Self> {
        let read = |source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(Error::ConfigSyntax {
                path: path.to_owned(),
                reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the content of `path`.
    ///
    /// # Errors
    /// [`Error::ConfigSyntax`] when it is not TOML.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let values = text
            .parse::<toml::Table>()
            .map_err(|e| Error::ConfigSyntax {
                path: path.to_owned(),
                // The message and the offset, never the source line (it may hold a value).
                reason: format!(
                    "{} (at byte {})",
                    e.message().trim_end(),
                    e.span().map_or(0, |s| s.start)
                ),
            })?;
        Ok(Self {
            path: path.to_owned(),
            values,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The command-line arguments the file stands for, for the flags of `cmd` that `given`
    /// (a parse of the real command line) did not get from the command line or the
    /// environment. A flag of an argument group (such as "one of `--bootstrap` and
    /// `--event-hubs`") is skipped when another member of its group was given.
    ///
    /// # Errors
    /// [`Error::UnknownKey`] for a key that names no flag (or names `skip`, such as the
    /// `--config` flag itself); [`Error::InvalidValue`] for a value its flag does not accept.
    pub fn to_args(
        &self,
        cmd: &Command,
        given: &ArgMatches,
        skip: &[&str],
    ) -> Result<Vec<OsString>> {
        let explicit = |id: &str| {
            matches!(
                given.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        // Flags whose group already has an explicit member.
        let mut overridden: HashSet<String> = HashSet::new();
        // Only groups whose members exclude each other (the derive's own group of every field
        // allows several).
        for group in cmd.get_groups().filter(|g| !(*g).clone().is_multiple()) {
            let members: Vec<&str> = group.get_args().map(|a| a.as_str()).collect();
            if members.iter().any(|m| explicit(m)) {
                overridden.extend(members.iter().map(|m| (*m).to_owned()));
            }
        }
        let mut out = Vec::new();
        for (key, value) in &self.values {
            let long = key.replace('_', "-");
            let unknown = || Error::UnknownKey {
                path: self.path.clone(),
                key: key.clone(),
            };
            if skip.contains(&long.as_str()) || matches!(long.as_str(), "help" | "version") {
                return Err(unknown());
            }
            let Some(arg) = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
            else {
                return Err(unknown());
            };
            let id = arg.get_id().as_str();
            if explicit(id) || overridden.contains(id) {
                continue;
            }
            let invalid = |reason: String| Error::InvalidValue {
                path: self.path.clone(),
                key: key.clone(),
                reason,
            };
            let takes_value = arg.get_action().takes_values();
            let scalars: Vec<&toml::Value> = match value {
                toml::Value::Array(items) => {
                    if !matches!(arg.get_action(), clap::ArgAction::Append) {
                        return Err(invalid(format!("`--{long}` takes one value, not a list")));
                    }
                    items.iter().collect()
                }
                other => vec![other],
            };
            for scalar in scalars {
                let text = match scalar {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) if !takes_value => {
                        if *b {
                            out.push(OsString::from(format!("--{long}")));
                        }
                        continue;
                    }
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(invalid(
                            "expected a string, a number, a boolean or a list of them".to_owned(),
                        ))
                    }
                };
                if !takes_value {
                    return Err(invalid(format!(
                        "`--{long}` is a switch: use true or false"
                    )));
                }
                // Checked here so that the error names the file and the key (and not the
                // value, which the file's owner has).
                let probe = Command::new("probe").arg(
                    clap::Arg::new("value")
                        .long("value")
                        .action(clap::ArgAction::Set)
                        .value_parser(arg.get_value_parser().clone()),
                );
                if let Err(e) = probe.try_get_matches_from([
                    OsStr::new("probe"),
                    OsStr::new("--value"),
                    OsStr::new(&text),
                ]) {
                    let mut reason = format!("not a valid value for `--{long}` ({})", e.kind());
                    let possible: Vec<String> = arg
                        .get_possible_values()
                        .iter()
                        .map(|v| v.get_name().to_owned())
                        .collect();
                    if !possible.is_empty() {
                        reason.push_str(&format!("; one of: {}", possible.join(", ")));
                    }
                    return Err(invalid(reason));
                }
                out.push(OsString::from(format!("--{long}={text}")));
            }
        }
        Ok(out)
    }
}

/// `cmd` without required flags or groups, ignoring errors: for a first look at the command
/// line before the file fills it.
fn lenient(cmd: Command) -> Command {
    let groups: Vec<String> = cmd
        .get_groups()
        .map(|g| g.get_id().as_str().to_owned())
        .collect();
    let mut cmd = cmd.mut_args(|a| a.required(false)).ignore_errors(true);
    for id in groups {
        cmd = cmd.mut_group(id, |g| g.required(false));
    }
    cmd
}

/// Parses `argv` into `T`: every flag gets an environment variable ([`with_env`] with
/// `env_prefix`), and with `config_flag` (the id of a `PathBuf` flag, such as `config`) the TOML
/// file it names fills the flags given neither on the command line nor in the environment.
///
/// # Errors
/// [`Error::Usage`] for what clap refuses (and for `--help` and `--version`, whose text it
/// holds); the errors of [`CliConfig::load`] and [`CliConfig::to_args`].
pub fn try_parse_from<T: Parser>(
    env_prefix: &str,
    config_flag: Option<&str>,
    argv: Vec<OsString>,
) -> Result<T> {
    let cmd = with_env(T::command(), env_prefix);
    let argv = match config_flag {
        Some(id) => {
            // A first, lenient parse tells which file and which flags were given.
            let first = lenient(cmd.clone()).try_get_matches_from(&argv);
            let path = first
                .as_ref()
                .ok()
                .and_then(|m| m.try_get_one::<PathBuf>(id).ok().flatten().cloned());
            match (path, first) {
                (Some(path), Ok(given)) => {
                    let config = CliConfig::load(&path)?;
                    let long = cmd
                        .get_arguments()
                        .find(|a| a.get_id() == id)
                        .and_then(|a| a.get_long())
                        .unwrap_or(id);
                    let from_file = config.to_args(&cmd, &given, &[long])?;
                    tracing::debug!(file = %path.display(), flags = from_file.len(), "configuration file read");
                    let mut merged = Vec::with_capacity(argv.len() + from_file.len());
                    let mut rest = argv.into_iter();
                    merged.extend(rest.next());
                    merged.extend(from_file);
                    merged.extend(rest);
                    merged
                }
                _ => argv,
            }
        }
        None => argv,
    };
    let matches = cmd.try_get_matches_from(argv).map_err(Error::Usage)?;
    T::from_arg_matches(&matches).map_err(Error::Usage)
}

/// [`try_parse_from`] over the process's arguments.
///
/// # Errors
/// As [`try_parse_from`].
pub fn try_parse<T: Parser>(env_prefix: &str, config_flag: Option<&str>) -> Result<T> {
    try_parse_from(env_prefix, config_flag, std::env::args_os().collect())
}

/// The subcommand paths of `cmd`, itself first (`[]`), then each subcommand recursively
/// (`["registry"]`, `["registry", "add"]`, …); clap's own `help` subcommand excepted.
pub fn command_paths(cmd: &Command) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        for mut path in command_paths(sub) {
            path.insert(0, sub.get_name().to_owned());
            out.push(path);
        }
    }
    out
}

/// Asks `T` (as [`try_parse_from`] with `env_prefix` and `config_flag` parses it, like the
/// binary's `main`) for `--help` on its command and on every subcommand; returns the paths
/// (`"registry add --help"`) that did not end in help on standard output, i.e. in exit code 0.
/// An empty list is a pass. For a test beside each binary's `main`: clap checks a command's
/// definition (such as two arguments with one id, from flattened shared flags) when it is
/// built, and panics in debug builds.
pub fn help_failures<T: Parser>(env_prefix: &str, config_flag: Option<&str>) -> Vec<String> {
    let cmd = T::command();
    let name = cmd.get_name().to_owned();
    command_paths(&cmd)
        .into_iter()
        .filter_map(|path| {
            let argv: Vec<OsString> = std::iter::once(name.as_str())
                .chain(path.iter().map(String::as_str))
                .chain(std::iter::once("--help"))
                .map(OsString::from)
                .collect();
            let shown = match try_parse_from::<T>(env_prefix, config_flag, argv) {
                Err(Error::Usage(e)) => {
                    e.kind() == clap::error::ErrorKind::DisplayHelp && !e.use_stderr()
                }
                _ => false,
            };
            (!shown).then(|| {
                path.iter()
                    .map(String::as_str)
                    .chain(["--help"])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .collect()
}

/// Reports a parse failure on standard error as clap does and gives the exit code: `0` for
/// `--help` and `--version` (printed on standard output), [`Exit::Usage`] otherwise.
#[allow(
    clippy::print_stderr,
    reason = "the binaries' usage errors are their interface; this crate serves only binaries"
)]
pub fn report(error: &Error) -> ExitCode {
    match error {
        Error::Usage(e) => {
            let _ = e.print();
            if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            }
        }
        other => {
            eprintln!("error: {other}");
            Exit::Usage.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, Parser)]
    #[command(name = "t")]
    #[command(group(clap::ArgGroup::new("broker").required(true).args(["bootstrap", "event_hubs"])))]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        bootstrap: Option<String>,
        #[arg(long)]
        event_hubs: Option<String>,
        #[arg(long, required = true)]
        topic: Vec<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        batch_size: u64,
        #[arg(long)]
        once: bool,
        #[arg(long, value_enum, default_value = "create")]
        identity: Mode,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
    enum Mode {
        Create,
        Lookup,
    }

    fn file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "carebridge-ops-{}-{}.toml",
            std::process::id(),
            text.len() ^ (text.as_ptr() as usize)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn parse(argv: &[&str]) -> Result<Args> {
        let argv = std::iter::once("t")
            .chain(argv.iter().copied())
            .map(OsString::from)
            .collect();
        try_parse_from("CAREBRIDGE_OPS_TEST", Some("config"), argv)
    }

    #[test]
    fn every_flag_gets_an_environment_variable() {
        let cmd = with_env(Args::command(), "MEDTECH_INGEST");
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        assert!(
            envs.contains(&"MEDTECH_INGEST_BATCH_SIZE".to_owned()),
            "{envs:?}"
        );
        assert!(
            envs.contains(&"MEDTECH_INGEST_EVENT_HUBS".to_owned()),
            "{envs:?}"
        );
        assert_eq!(envs.len(), 7, "{envs:?}");
    }

    #[test]
    fn the_file_fills_what_the_command_line_does_not_give() {
        let path = file(
            "bootstrap = \"b:9092\"\ntopic = [\"a\", \"b\"]\nbatch_size = 7\nonce = true\nidentity = \"lookup\"\n",
        );
        let p = path.to_str().unwrap();
        let args = parse(&["--config", p]).unwrap();
        assert_eq!(args.bootstrap.as_deref(), Some("b:9092"));
        assert_eq!(args.topic, vec!["a", "b"]);
        assert_eq!(args.batch_size, 7);
        assert!(args.once);
        assert_eq!(args.identity, Mode::Lookup);
        // Flags override the file; a group member given on the command line replaces the
        // file's member of the same group.
        let args = parse(&[
            "--config",
            p,
            "--batch-size",
            "9",
            "--topic",
            "c",
            "--event-hubs",
            "ns",
        ])
        .unwrap();
        assert_eq!(args.batch_size, 9);
        assert_eq!(args.topic, vec!["c"]);
        assert_eq!(args.bootstrap, None);
        assert_eq!(args.event_hubs.as_deref(), Some("ns"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let path = file("bootstrap = \"b\"\ntopic = [\"a\"]\nbatch-sise = 7\n");
        let p = path.to_str().unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(
            matches!(&e, Error::UnknownKey { key, .. } if key == "batch-sise"),
            "{e:?}"
        );
        assert!(e.to_string().contains(p), "{e}");
        std::fs::write(&path, "bootstrap = \"b\"\ntopic = \"a\"\nbatch-size = 0\n").unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidValue { key, .. } if key == "batch-size"),
            "{e:?}"
        );
        std::fs::write(
            &path,
            "bootstrap = \"b\"\ntopic = \"a\"\nidentity = \"secret-ish\"\n",
        )
        .unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(e.to_string().contains("one of: create, lookup"), "{e}");
        assert!(!e.to_string().contains("secret-ish"), "{e}");
        std::fs::write(&path, "config = \"other.toml\"\n").unwrap();
        assert!(matches!(
            parse(&["--config", p]),
            Err(Error::UnknownKey { .. })
        ));
        std::fs::write(&path, "bootstrap = \n").unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(matches!(e, Error::ConfigSyntax { .. }), "{e:?}");
        std::fs::remove_file(&path).unwrap();
    }

    #[derive(Debug, Parser)]
    #[command(name = "nested")]
    struct Nested {
        #[command(subcommand)]
        command: Outer,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Outer {
        /// Has subcommands.
        Registry {
            #[command(subcommand)]
            command: Inner,
        },
        /// Has none.
        Serve,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Inner {
        /// Adds.
        Add,
    }

    #[test]
    fn help_reaches_every_subcommand() {
        let paths = command_paths(&Nested::command());
        assert_eq!(
            paths,
            [
                vec![],
                vec!["registry".to_owned()],
                vec!["registry".to_owned(), "add".to_owned()],
                vec!["serve".to_owned()],
            ]
        );
        assert_eq!(
            help_failures::<Nested>("CAREBRIDGE_OPS_TEST", None),
            Vec::<String>::new()
        );
        // A command without `--help` is reported.
        #[derive(Debug, Parser)]
        #[command(name = "mute", disable_help_flag = true)]
        struct Mute {
            #[arg(long)]
            verbose: bool,
        }
        assert_eq!(
            help_failures::<Mute>("CAREBRIDGE_OPS_TEST", None),
            ["--help"]
        );
        // A required flag does not stop `--help`, with or without a configuration flag.
        assert_eq!(
            help_failures::<Args>("CAREBRIDGE_OPS_TEST", Some("config")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn without_a_file_flags_are_required_as_usual() {
        assert!(matches!(parse(&["--topic", "a"]), Err(Error::Usage(_))));
        assert!(parse(&["--topic", "a", "--bootstrap", "b"]).is_ok());
    }
}
