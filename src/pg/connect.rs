//! How the module connects to Postgres: the connection string with libpq's TLS
//! and authentication parameters (`sslmode`, `sslrootcert`, `require_auth`), the
//! password from a file or the environment, and the TLS connector that enforces
//! the chosen `sslmode`.

use super::auth::RequireAuth;
use super::connect_error::{Invalid, SettingsError};
use super::conninfo;
use super::tls::Tls;
use native_tls::{Certificate, Protocol, TlsConnector};
use postgres::config::SslMode as WireMode;
use std::str::FromStr;

/// Parameters of the connection string that rust-postgres does not know; the
/// module applies them itself.
const OWN_PARAMS: [&str; 3] = ["sslmode", "sslrootcert", "require_auth"];

/// Environment variable that may hold the Postgres password.
pub const PASSWORD_ENV: &str = "PGSYNC_POSTGRES_PASSWORD";

/// libpq's `sslmode`: whether to encrypt, and how much of the server's
/// certificate to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connection only.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless `sslrootcert`
    /// is given: then as `VerifyCa`).
    Require,
    /// TLS, and the certificate chain must lead to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<SslMode, Invalid> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries plain first; rust-postgres cannot, and
            // silently treating it as `prefer` would change its meaning.
            _ => return Err(Invalid::SslMode(s.to_string())),
        })
    }
}

/// Where the trusted certificate authorities come from.
enum Roots {
    /// No `sslrootcert`: nothing to verify against.
    None,
    /// `sslrootcert=system`: the system's trusted roots (as libpq 16).
    System,
    /// The certificates of the `sslrootcert` file.
    File(Vec<Certificate>),
}

/// Everything needed to open a connection.
pub struct Settings {
    /// Host, user, database, password, sslmode as rust-postgres takes them.
    pub config: postgres::Config,
    /// The connector enforcing the TLS policy.
    pub tls: Tls,
}

/// Parses a connection string; `password`, when given, replaces the string's own.
/// Errors name the problem and never show the string: rust-postgres parses it
/// with the password taken out, which is set apart.
pub fn settings(url: &str, password: Option<&str>) -> Result<Settings, SettingsError> {
    let Read { config, mode, roots, require_auth } = read(url, password)?;
    let tls = connector(mode, roots).map_err(SettingsError::Tls)?;
    Ok(Settings { config, tls: Tls::new(tls, require_auth) })
}

/// A connection string read, before the TLS connector is built.
pub(super) struct Read {
    /// As [`Settings::config`].
    pub config: postgres::Config,
    mode: SslMode,
    roots: Roots,
    require_auth: Option<RequireAuth>,
}

/// All of [`settings`] but building the TLS connector (which loads the
/// system's certificate store: slow, for the tests that read many strings).
pub(super) fn read(url: &str, password: Option<&str>) -> Result<Read, SettingsError> {
    let info = conninfo::split(url, &OWN_PARAMS).map_err(Invalid::ConnInfo)?;
    let param = |name: &str| info.taken.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let root_path = param("sslrootcert");
    let roots = match root_path {
        None => Roots::None,
        Some("system") => Roots::System,
        Some(path) => Roots::File(read_roots(path)?),
    };
    let mode = match (param("sslmode"), &roots) {
        (Some(mode), Roots::System) if mode != "verify-full" => {
            return Err(SettingsError::SystemRootsNeedVerifyFull { mode: mode.to_string() });
        }
        (Some(mode), _) => mode.parse()?,
        (None, Roots::System) => SslMode::VerifyFull,
        (None, _) => SslMode::Prefer,
    };
    if matches!((mode, &roots), (SslMode::VerifyCa | SslMode::VerifyFull, Roots::None)) {
        // libpq would look for ~/.postgresql/root.crt; the server's home is no
        // place to hide the trust anchor of the database, so ask for it.
        return Err(SettingsError::VerifyNeedsRoots);
    }
    let require_auth = match param("require_auth").filter(|v| !v.is_empty()) {
        Some(text) => Some(text.parse::<RequireAuth>().map_err(Invalid::RequireAuth)?),
        None => None,
    };
    if require_auth.is_some() && matches!(mode, SslMode::Disable | SslMode::Prefer) {
        // The client crate hands the module the stream only when it is TLS: on a
        // plain connection the check could not happen.
        return Err(SettingsError::RequireAuthNeedsTls);
    }
    let mut config = postgres::Config::from_str(&info.rest).map_err(Invalid::Config)?;
    match (password, info.password) {
        (Some(password), _) => config.password(password),
        (None, Some(password)) => config.password(password),
        (None, None) => &mut config,
    };
    config.ssl_mode(match mode {
        SslMode::Disable => WireMode::Disable,
        SslMode::Prefer => WireMode::Prefer,
        _ => WireMode::Require,
    });
    Ok(Read { config, mode, roots, require_auth })
}

/// The TLS policy of `mode`, as libpq applies it.
fn connector(mode: SslMode, roots: Roots) -> Result<TlsConnector, native_tls::Error> {
    let mut builder = TlsConnector::builder();
    builder.min_protocol_version(Some(Protocol::Tlsv12));
    let verify = match (mode, &roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, Roots::None) => None,
        // libpq: `require` with a root certificate file behaves as `verify-ca`.
        (SslMode::Require | SslMode::VerifyCa, _) => Some(false),
        (SslMode::VerifyFull, _) => Some(true),
    };
    match verify {
        None => {
            builder.danger_accept_invalid_certs(true);
        }
        Some(check_host) => {
            builder.danger_accept_invalid_hostnames(!check_host);
            if let Roots::File(certs) = roots {
                // Only the given authorities, as libpq: a public CA must not be
                // able to vouch for the database.
                builder.disable_built_in_roots(true);
                for cert in certs {
                    builder.add_root_certificate(cert);
                }
            }
        }
    }
    builder.build()
}

/// The certificates of a PEM file (one or a bundle, as cloud providers ship).
fn read_roots(path: &str) -> Result<Vec<Certificate>, SettingsError> {
    let pem = std::fs::read(path).map_err(|source| SettingsError::RootsUnreadable { path: path.into(), source })?;
    let certs =
        Certificate::stack_from_pem(&pem).map_err(|source| SettingsError::RootsNotPem { path: path.into(), source })?;
    if certs.is_empty() {
        return Err(SettingsError::NoRoots { path: path.into() });
    }
    Ok(certs)
}

/// The password to use instead of the connection string's: the content of
/// `file` (if set; one trailing newline trimmed), else `PGSYNC_POSTGRES_PASSWORD`.
pub fn password_override(file: &str) -> Result<Option<String>, SettingsError> {
    if !file.is_empty() {
        let text = std::fs::read_to_string(file)
            .map_err(|source| SettingsError::PasswordFile { file: file.into(), source })?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        return Ok(Some(text.to_string()));
    }
    Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
}

/// The startup `options` of every module session: the URL's own, then the
/// mark `origin` (so the NOTIFY triggers do not echo the module's writes) and
/// the settings that fix how Postgres prints values, whatever the server's or
/// the role's defaults, so a key column's text is one spelling in every session
/// (see `model::key_text`): `DateStyle` ISO and `TimeZone` UTC. Later `-c`
/// settings win, so the URL cannot change these.
pub fn session_options(existing: Option<&str>, origin: &str) -> String {
    let ours = format!("-c pgsync.origin={origin} -c DateStyle=ISO,MDY -c TimeZone=UTC");
    match existing {
        Some(existing) => format!("{existing} {ours}"),
        None => ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_print_dates_as_iso_in_utc_after_the_urls_own_options() {
        assert_eq!(session_options(None, "x"), "-c pgsync.origin=x -c DateStyle=ISO,MDY -c TimeZone=UTC");
        let with_url = session_options(Some("-c TimeZone=Europe/Paris"), "x");
        assert!(
            with_url.starts_with("-c TimeZone=Europe/Paris ") && with_url.ends_with("-c TimeZone=UTC"),
            "{with_url}"
        );
    }

    #[test]
    fn sslmode_values() {
        assert_eq!("verify-full".parse::<SslMode>().ok(), Some(SslMode::VerifyFull));
        assert!("allow".parse::<SslMode>().unwrap_err().to_string().contains("not supported"));
        assert!("Require".parse::<SslMode>().is_err());
    }

    #[test]
    fn load_errors_are_clear_and_hide_the_password() {
        let e = settings("postgres://u:hunter2@h/db?sslmode=bogus", None).err().unwrap().to_string();
        assert!(e.contains("bogus") && !e.contains("hunter2"), "{e}");
        let e = settings("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let e = settings("host=h sslrootcert=system sslmode=require", None).err().unwrap().to_string();
        assert!(e.contains("verify-full"), "{e}");
        let e = settings("host=h sslmode=verify-ca", None).err().unwrap().to_string();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = settings("host=h require_auth=scram-sha-256", None).err().unwrap().to_string();
        assert!(e.contains("require_auth needs sslmode=require"), "{e}");
        let e = settings("host=h sslmode=require require_auth=scram", None).err().unwrap().to_string();
        assert!(e.contains("\"scram\" is not known"), "{e}");
        assert!(settings("postgres://h/db?sslmode=require&require_auth=!password,!md5", None).is_ok());
    }

    #[test]
    fn ssl_mode_reaches_the_wire_config() {
        let s = settings("postgres://u@h/db", None).unwrap();
        assert_eq!(s.config.get_ssl_mode(), WireMode::Prefer);
        let s = settings("host=h user=u sslmode=verify-full sslrootcert=system", Some("pw")).unwrap();
        assert_eq!(s.config.get_ssl_mode(), WireMode::Require);
        assert_eq!(s.config.get_password(), Some(&b"pw"[..]));
        let s = settings("postgres://u@h/db?sslmode=disable", None).unwrap();
        assert_eq!(s.config.get_ssl_mode(), WireMode::Disable);
    }
}
