//! The release binary's entry point (src/entry.rs) on static musl x86_64
//! builds: `paddock_start`, which runs before musl's `_start`. Other
//! targets keep their C library's entry.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if env == "musl" && arch == "x86_64" {
        println!("cargo::rustc-link-arg-bins=-Wl,--entry=paddock_start");
    }
}
