// Rebuild when a migration is added: `sqlx::migrate!` embeds the directory's files at compile
// time, but cargo does not watch the directory for new ones by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
