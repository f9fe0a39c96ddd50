//! Schema migrations, embedded in the binary. The files in `migrations/<backend>/` follow
//! sqlx's naming (`NNNN_name.sql`); Hearth records what it applied in `hearth_migration`
//! with a checksum, and refuses to run on a database whose applied migrations were edited.

/// One migration file.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// FNV-1a of the SQL text: stable across Rust versions, enough to notice an edit.
    pub fn checksum(&self) -> i64 {
        let mut hash: u64 = 0xcbf29ce484222325;
        for byte in self.sql.bytes() {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x100000001b3);
        }
        hash as i64
    }
}

macro_rules! migration {
    ($backend:literal, $version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                "../../migrations/",
                $backend,
                "/",
                stringify!($version),
                "_",
                $name,
                ".sql"
            )),
        }
    };
}

// The versions are written as in the file names, which `stringify!` turns them back into.
#[allow(clippy::zero_prefixed_literal)]
pub const POSTGRES: &[Migration] = &[
    migration!("postgres", 0001, "resources"),
    migration!("postgres", 0002, "search_index"),
    migration!("postgres", 0003, "search_composite"),
    migration!("postgres", 0004, "token_key_order"),
    migration!("postgres", 0005, "auth"),
    migration!("postgres", 0006, "audit"),
    migration!("postgres", 0007, "audit_table"),
    migration!("postgres", 0008, "audit_columns"),
    migration!("postgres", 0009, "audit_packed"),
];
#[allow(clippy::zero_prefixed_literal)]
pub const SQLITE: &[Migration] = &[
    migration!("sqlite", 0001, "resources"),
    migration!("sqlite", 0002, "search_index"),
    migration!("sqlite", 0003, "search_composite"),
    migration!("sqlite", 0004, "token_key_order"),
    migration!("sqlite", 0005, "auth"),
    migration!("sqlite", 0006, "audit"),
    migration!("sqlite", 0007, "audit_table"),
    migration!("sqlite", 0008, "audit_columns"),
    migration!("sqlite", 0009, "audit_packed"),
];
