//! The exit codes every carebridge binary uses.

use std::process::ExitCode;

/// How a carebridge binary ends; the same codes in every binary.
///
/// | code | meaning |
/// |---|---|
/// | 0 | ok |
/// | 1 | data errors: some input could not be mapped or written (dead letters, rejected changes, an invalid mapping) |
/// | 2 | usage or configuration: a bad flag, a missing or malformed file or setting |
/// | 3 | a dependency unreachable: the broker, the FHIR server, Dataverse or the store could not be reached |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// 0: everything went well.
    Ok = 0,
    /// 1: some data could not be processed.
    Data = 1,
    /// 2: usage or configuration error.
    Usage = 2,
    /// 3: a dependency could not be reached.
    Unreachable = 3,
}

impl Exit {
    /// The numeric code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The more serious of two outcomes (`Unreachable` > `Usage` > `Data` > `Ok`), for a run
    /// that met several problems.
    #[must_use]
    pub fn worst(self, other: Self) -> Self {
        fn rank(e: Exit) -> u8 {
            match e {
                Exit::Ok => 0,
                Exit::Data => 1,
                Exit::Usage => 2,
                Exit::Unreachable => 3,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<u8> = [Exit::Ok, Exit::Data, Exit::Usage, Exit::Unreachable]
            .into_iter()
            .map(Exit::code)
            .collect();
        assert_eq!(codes, vec![0, 1, 2, 3]);
    }

    #[test]
    fn worst_prefers_the_more_serious() {
        assert_eq!(Exit::Ok.worst(Exit::Data), Exit::Data);
        assert_eq!(Exit::Unreachable.worst(Exit::Data), Exit::Unreachable);
        assert_eq!(Exit::Usage.worst(Exit::Ok), Exit::Usage);
    }
}
