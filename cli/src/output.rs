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

/// How long ago `unix_secs` was, for humans (`5 min ago`, `3 d ago`).
pub fn ago(unix_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secs = (now - unix_secs).max(0);
    match secs {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}
