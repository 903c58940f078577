//! Loading settings for a program, with command-line flags applied on top.

use pyoco_config::{LoadOptions, Settings};

/// Load settings from the process environment and `.env`, with `overrides` (flag values as
/// `PYOCO_*` pairs) taking precedence over both. On error, prints every problem and what to do,
/// and exits 1.
pub fn load_settings(program: &str, overrides: &[(&str, String)]) -> Settings {
    let result = LoadOptions::from_process().and_then(|mut opts| {
        for (name, value) in overrides {
            opts.env.insert((*name).to_string(), value.clone());
        }
        Settings::load(&opts)
    });
    match result {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("[{program}][ERR-PYOCO-0018] invalid configuration:");
            for line in err.to_string().lines() {
                eprintln!("  {line}");
            }
            eprintln!(
                "  hint: fix the value in the environment or the .env file named above; \
                 docs/configuration.md lists every setting"
            );
            std::process::exit(1);
        }
    }
}
