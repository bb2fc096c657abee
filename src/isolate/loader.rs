//! Resolves and loads a function's modules from its bundle in memory.
//!
//! A function's modules live at `islet://<name>/<path>`. Relative imports resolve inside that space
//! and can never leave it (a URL's path cannot climb above its host); bare specifiers, `http:`,
//! `file:` and every other scheme are refused. Nothing here touches the filesystem or the network.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use deno_core::error::ModuleLoaderError;
use deno_core::{
  ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource, ModuleSourceCode,
  ModuleSpecifier, ModuleType, ResolutionKind, SourceCodeCacheInfo,
};
use deno_error::JsErrorBox;

use crate::registry::{CodeCacheUse, Function};

/// The URL scheme of tenant modules.
pub const SCHEME: &str = "islet";

/// The URL of module `path` of function `name`.
pub fn module_url(name: &str, path: &str) -> String {
  format!("{SCHEME}://{name}/{path}")
}

/// `islet://hello/lib/a.js` → `hello/lib/a.js`: how error messages name a module.
pub fn display_name(url: &str) -> &str {
  url.strip_prefix("islet://").unwrap_or(url)
}

/// The module loader of one isolate; empty until a function is loaded into it.
#[derive(Default)]
pub struct FunctionLoader {
  function: RefCell<Option<Arc<Function>>>,
}

impl FunctionLoader {
  pub fn set_function(&self, function: Arc<Function>) {
    *self.function.borrow_mut() = Some(function);
  }

  fn function(&self) -> Result<Arc<Function>, JsErrorBox> {
    self
      .function
      .borrow()
      .clone()
      .ok_or_else(|| JsErrorBox::generic("no function is loaded in this isolate"))
  }
}

impl ModuleLoader for FunctionLoader {
  fn resolve(
    &self,
    specifier: &str,
    referrer: &str,
    _kind: ResolutionKind,
  ) -> Result<ModuleSpecifier, ModuleLoaderError> {
    let function = self.function()?;
    let is_relative =
      specifier.starts_with("./") || specifier.starts_with("../") || specifier.starts_with('/');
    let resolved = if is_relative {
      let base = ModuleSpecifier::parse(referrer)
        .map_err(|e| JsErrorBox::type_error(format!("invalid referrer '{referrer}': {e}")))?;
      base
        .join(specifier)
        .map_err(|e| JsErrorBox::type_error(format!("cannot resolve '{specifier}': {e}")))?
    } else {
      match ModuleSpecifier::parse(specifier) {
        Ok(url) if url.scheme() == SCHEME => url,
        _ => {
          return Err(JsErrorBox::type_error(format!(
            "cannot import '{specifier}' from {}: a function may import only its own modules, by relative path (./file.js)",
            display_name(referrer)
          )));
        }
      }
    };
    if resolved.host_str() != Some(function.name.as_str()) {
      return Err(JsErrorBox::type_error(format!(
        "cannot import '{specifier}' from {}: it is outside this function",
        display_name(referrer)
      )));
    }
    Ok(resolved)
  }

  fn load(
    &self,
    specifier: &ModuleSpecifier,
    referrer: Option<&ModuleLoadReferrer>,
    _options: ModuleLoadOptions,
  ) -> ModuleLoadResponse {
    ModuleLoadResponse::Sync(self.function().and_then(|function| {
      let path = specifier.path().trim_start_matches('/');
      match function.modules.get(path) {
        Some(source) => {
          // With `data: None`, V8 makes a cache after compiling and hands it to code_cache_ready;
          // without the info at all, it neither reads nor makes one.
          let hash = source_hash(source);
          let cache = match function.code_cache.lookup(path, hash) {
            CodeCacheUse::Skip => None,
            CodeCacheUse::Make => Some(SourceCodeCacheInfo { hash, data: None }),
            CodeCacheUse::Use(data) => Some(SourceCodeCacheInfo {
              hash,
              data: Some(Cow::Owned(data.to_vec())),
            }),
          };
          Ok(ModuleSource::new(
            ModuleType::JavaScript,
            ModuleSourceCode::String(source.clone().into()),
            specifier,
            cache,
          ))
        }
        None => Err(JsErrorBox::type_error(match referrer {
          Some(r) => format!(
            "module not found: {} (imported from {}:{})",
            display_name(specifier.as_str()),
            display_name(r.specifier.as_str()),
            r.line_number
          ),
          None => format!("module not found: {}", display_name(specifier.as_str())),
        })),
      }
    }))
  }

  fn code_cache_ready(
    &self,
    specifier: ModuleSpecifier,
    hash: u64,
    code_cache: &[u8],
  ) -> Pin<Box<dyn Future<Output = ()>>> {
    if let Ok(function) = self.function() {
      function
        .code_cache
        .put(specifier.path().trim_start_matches('/'), hash, code_cache);
    }
    Box::pin(std::future::ready(()))
  }
}

/// Identifies a module's source for its code cache (the whole text, not just its length, which is
/// all V8 itself checks).
fn source_hash(source: &str) -> u64 {
  let mut hasher = std::hash::DefaultHasher::new();
  source.hash(&mut hasher);
  hasher.finish()
}
