//! The arguments of a `MIGRATE`, split so the module can change which keys it
//! moves (a row's keys leave together, or not at all while the row is being
//! written to Postgres) and rebuild the command in its multi-key form.

/// A parsed `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw]
/// [AUTH2 user pw] [KEYS key ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateArgs {
    /// host, port, db and timeout.
    host: Vec<u8>,
    port: Vec<u8>,
    db: Vec<u8>,
    timeout: Vec<u8>,
    /// COPY, REPLACE, AUTH and AUTH2 with their values, as given.
    options: Vec<Vec<u8>>,
    /// The keys to move, in the order given.
    pub keys: Vec<Vec<u8>>,
    /// `COPY`: the keys stay here too.
    pub copy: bool,
}

impl MigrateArgs {
    /// Parses MIGRATE's arguments (without the command name); `None` when they
    /// are malformed (MIGRATE itself then says why).
    pub fn parse(argv: &[Vec<u8>]) -> Option<MigrateArgs> {
        let [host, port, key, db, timeout, rest @ ..] = argv else { return None };
        let mut args = MigrateArgs {
            host: host.clone(),
            port: port.clone(),
            db: db.clone(),
            timeout: timeout.clone(),
            options: Vec::new(),
            keys: if key.is_empty() { Vec::new() } else { vec![key.clone()] },
            copy: false,
        };
        let mut i = 0;
        while let Some(option) = rest.get(i) {
            let values = match option.to_ascii_uppercase().as_slice() {
                b"COPY" => {
                    args.copy = true;
                    0
                }
                b"REPLACE" => 0,
                b"AUTH" => 1,
                b"AUTH2" => 2,
                b"KEYS" if key.is_empty() => {
                    args.keys.extend(rest[i + 1..].iter().cloned());
                    return Some(args);
                }
                _ => return None,
            };
            args.options.extend(rest.get(i..=i + values)?.iter().cloned());
            i += values + 1;
        }
        Some(args)
    }

    /// The arguments of a `MIGRATE` of `keys` (multi-key form) with the same
    /// destination and options.
    pub fn with_keys(&self, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut argv = vec![self.host.clone(), self.port.clone(), Vec::new(), self.db.clone(), self.timeout.clone()];
        argv.extend(self.options.iter().cloned());
        argv.push(b"KEYS".to_vec());
        argv.extend(keys.iter().cloned());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn both_forms_become_the_multi_key_form_with_their_options() {
        let one = MigrateArgs::parse(&argv(&["h", "7000", "k", "0", "5000", "REPLACE", "AUTH2", "u", "p"])).unwrap();
        assert_eq!(one.keys, argv(&["k"]));
        assert_eq!(
            one.with_keys(&argv(&["k", "j"])),
            argv(&["h", "7000", "", "0", "5000", "REPLACE", "AUTH2", "u", "p", "KEYS", "k", "j"])
        );
        let many = MigrateArgs::parse(&argv(&["h", "7000", "", "0", "5000", "copy", "KEYS", "a", "b"])).unwrap();
        assert!(many.copy);
        assert_eq!(many.keys, argv(&["a", "b"]));
    }

    #[test]
    fn malformed_arguments_are_left_to_migrate() {
        assert_eq!(MigrateArgs::parse(&argv(&["h", "7000", "k", "0"])), None);
        assert_eq!(MigrateArgs::parse(&argv(&["h", "7000", "k", "0", "5000", "KEYS", "a"])), None, "KEYS needs \"\"");
        assert_eq!(MigrateArgs::parse(&argv(&["h", "7000", "k", "0", "5000", "AUTH"])), None);
        assert_eq!(MigrateArgs::parse(&argv(&["h", "7000", "k", "0", "5000", "BOGUS"])), None);
    }
}
