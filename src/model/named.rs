//! Closed sets of names from the kernel's vocabulary: signals and capabilities.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a known {what}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

/// An enum whose variants are spelled exactly as the kernel names them, with
/// their numbers, a list of every name for the schema, and serde by name.
macro_rules! named_enum {
    ($(#[$meta:meta])* $ty:ident, $what:literal, $description:literal { $($variant:ident = $name:literal : $num:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $ty { $($variant),+ }

        impl $ty {
            pub const ALL: &[$ty] = &[$($ty::$variant),+];

            pub const fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            pub const fn number(self) -> i32 {
                match self { $($ty::$variant => $num),+ }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName { what: $what, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        serde_as_string!($ty);

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "enum": [$($name),+], "description": $description })
            }
        }
    };
}

named_enum!(
    /// A signal, by its `SIG` name.
    Signal, "signal", "A signal name such as \"SIGTERM\"." {
        Hup = "SIGHUP": 1, Int = "SIGINT": 2, Quit = "SIGQUIT": 3, Ill = "SIGILL": 4,
        Trap = "SIGTRAP": 5, Abrt = "SIGABRT": 6, Bus = "SIGBUS": 7, Fpe = "SIGFPE": 8,
        Kill = "SIGKILL": 9, Usr1 = "SIGUSR1": 10, Segv = "SIGSEGV": 11, Usr2 = "SIGUSR2": 12,
        Pipe = "SIGPIPE": 13, Alrm = "SIGALRM": 14, Term = "SIGTERM": 15, StkFlt = "SIGSTKFLT": 16,
        Chld = "SIGCHLD": 17, Cont = "SIGCONT": 18, Stop = "SIGSTOP": 19, Tstp = "SIGTSTP": 20,
        Ttin = "SIGTTIN": 21, Ttou = "SIGTTOU": 22, Urg = "SIGURG": 23, Xcpu = "SIGXCPU": 24,
        Xfsz = "SIGXFSZ": 25, Vtalrm = "SIGVTALRM": 26, Prof = "SIGPROF": 27, Winch = "SIGWINCH": 28,
        Io = "SIGIO": 29, Pwr = "SIGPWR": 30, Sys = "SIGSYS": 31,
    }
);

impl Signal {
    /// The signal with this number, for reporting how a process died.
    pub fn from_number(n: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.number() == n)
    }
}

named_enum!(
    /// A Linux capability, named without the `CAP_` prefix (as Docker and
    /// Kubernetes write them).
    Capability, "capability", "A capability name without the CAP_ prefix, such as \"NET_BIND_SERVICE\"." {
        Chown = "CHOWN": 0, DacOverride = "DAC_OVERRIDE": 1, DacReadSearch = "DAC_READ_SEARCH": 2,
        Fowner = "FOWNER": 3, Fsetid = "FSETID": 4, Kill = "KILL": 5, Setgid = "SETGID": 6,
        Setuid = "SETUID": 7, Setpcap = "SETPCAP": 8, LinuxImmutable = "LINUX_IMMUTABLE": 9,
        NetBindService = "NET_BIND_SERVICE": 10, NetBroadcast = "NET_BROADCAST": 11,
        NetAdmin = "NET_ADMIN": 12, NetRaw = "NET_RAW": 13, IpcLock = "IPC_LOCK": 14,
        IpcOwner = "IPC_OWNER": 15, SysModule = "SYS_MODULE": 16, SysRawio = "SYS_RAWIO": 17,
        SysChroot = "SYS_CHROOT": 18, SysPtrace = "SYS_PTRACE": 19, SysPacct = "SYS_PACCT": 20,
        SysAdmin = "SYS_ADMIN": 21, SysBoot = "SYS_BOOT": 22, SysNice = "SYS_NICE": 23,
        SysResource = "SYS_RESOURCE": 24, SysTime = "SYS_TIME": 25, SysTtyConfig = "SYS_TTY_CONFIG": 26,
        Mknod = "MKNOD": 27, Lease = "LEASE": 28, AuditWrite = "AUDIT_WRITE": 29,
        AuditControl = "AUDIT_CONTROL": 30, Setfcap = "SETFCAP": 31, MacOverride = "MAC_OVERRIDE": 32,
        MacAdmin = "MAC_ADMIN": 33, Syslog = "SYSLOG": 34, WakeAlarm = "WAKE_ALARM": 35,
        BlockSuspend = "BLOCK_SUSPEND": 36, AuditRead = "AUDIT_READ": 37, Perfmon = "PERFMON": 38,
        Bpf = "BPF": 39, CheckpointRestore = "CHECKPOINT_RESTORE": 40,
    }
);

impl Capability {
    /// Docker's default set: what a workload has before `capabilities` adds to it.
    pub const DEFAULT_SET: &[Capability] = &[
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Signal::ALL {
            assert_eq!(s.name().parse::<Signal>(), Ok(*s));
            assert_eq!(Signal::from_number(s.number()), Some(*s));
        }
        for c in Capability::ALL {
            assert_eq!(c.name().parse::<Capability>(), Ok(*c));
        }
        assert_eq!(Capability::ALL.len(), 41);
        assert_eq!(Capability::ALL.iter().map(|c| c.number()).collect::<Vec<_>>(), (0..41).collect::<Vec<_>>());
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!("TERM".parse::<Signal>().is_err());
        assert!("CAP_CHOWN".parse::<Capability>().is_err());
        assert!("chown".parse::<Capability>().is_err());
    }
}
