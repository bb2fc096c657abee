//! `islet init NAME --template T`: a project folder ready for `islet dev` and `islet deploy`: an
//! `islet.toml`, the entry module, and a README with a request to try. The templates are embedded
//! in the binary; `{{name}}` in them becomes the project's name.

use std::path::{Path, PathBuf};

/// A template: its name, what it shows, and its files (path in the project, text).
pub struct Template {
  pub name: &'static str,
  pub about: &'static str,
  files: [(&'static str, &'static str); 3],
}

macro_rules! template {
  ($name:literal, $about:literal) => {
    Template {
      name: $name,
      about: $about,
      files: [
        (
          "islet.toml",
          include_str!(concat!("templates/", $name, "/islet.toml")),
        ),
        (
          "src/index.js",
          include_str!(concat!("templates/", $name, "/index.js")),
        ),
        (
          "README.md",
          include_str!(concat!("templates/", $name, "/README.md")),
        ),
      ],
    }
  };
}

/// The longest project name: 63 (a DNS label) less the longest suffix a template adds (`-photos`).
const MAX_NAME: usize = 56;

pub const TEMPLATES: [Template; 4] = [
  template!("fetch", "an HTTP handler"),
  template!("queue", "a queue producer and its batch consumer, with KV"),
  template!("cron", "a scheduled function that keeps state in KV"),
  template!(
    "thumbnail",
    "uploads to a bucket, thumbnails made by its object-create events"
  ),
];

/// Creates `parent/name/` from `template`; refuses a name that is not a function name (a lowercase
/// DNS label) and a folder that already exists. Returns the folder.
pub fn init(parent: &Path, name: &str, template: &str) -> Result<PathBuf, String> {
  // The templates name queues, namespaces and buckets `<name>-photos` and the like, which must
  // stay within 63 bytes too.
  let valid = !name.is_empty()
    && name.len() <= MAX_NAME
    && name
      .bytes()
      .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    && !name.starts_with('-')
    && !name.ends_with('-');
  if !valid {
    return Err(format!(
      "'{name}' is not a project name: lowercase letters, digits and '-', at most {MAX_NAME}, not starting or ending with '-'"
    ));
  }
  let Some(template) = TEMPLATES.iter().find(|t| t.name == template) else {
    let known: Vec<_> = TEMPLATES.iter().map(|t| t.name).collect();
    return Err(format!("no template '{template}': one of {}", known.join(", ")));
  };
  let root = parent.join(name);
  if root.exists() {
    return Err(format!("{} already exists", root.display()));
  }
  for (path, text) in template.files {
    let path = root.join(path);
    if let Some(dir) = path.parent() {
      std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&path, text.replace("{{name}}", name)).map_err(|e| format!("{}: {e}", path.display()))?;
  }
  // `islet dev` keeps the project's queues, KV and buckets in .islet/: data, not source.
  let ignore = root.join(".gitignore");
  std::fs::write(&ignore, ".islet/\n").map_err(|e| format!("{}: {e}", ignore.display()))?;
  Ok(root)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn refuses_bad_names_unknown_templates_and_existing_folders() {
    let parent = std::env::temp_dir().join(format!("islet-init-{}", std::process::id()));
    std::fs::create_dir_all(&parent).unwrap();
    assert!(init(&parent, "Bad_Name", "fetch")
      .unwrap_err()
      .contains("not a project name"));
    assert!(init(&parent, &"a".repeat(57), "fetch")
      .unwrap_err()
      .contains("at most 56"));
    assert!(init(&parent, "ok", "nope").unwrap_err().contains("no template"));
    let made = init(&parent, "ok", "fetch").unwrap();
    let manifest = std::fs::read_to_string(made.join("islet.toml")).unwrap();
    assert!(manifest.contains("[functions.ok]") && !manifest.contains("{{name}}"));
    assert_eq!(
      std::fs::read_to_string(made.join(".gitignore")).unwrap(),
      ".islet/\n"
    );
    assert!(init(&parent, "ok", "fetch")
      .unwrap_err()
      .contains("already exists"));
    std::fs::remove_dir_all(&parent).unwrap();
  }
}
