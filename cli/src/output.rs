//! Output for people (lines) or scripts (`--json`: one JSON document per command, or one JSON
//! event per line for streams).

use serde_json::Value;

#[derive(Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Prints `value` as JSON, or `human` for people.
    pub fn show(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    /// A progress line on stderr for people; an event line on stdout for scripts.
    pub fn event(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            eprintln!("{}", human());
        }
    }
}
