//! Parse-only check of a function's modules, so a syntax error is reported when code is loaded
//! (file, line, column) instead of on the first request, and without running any tenant code.
//! Must not run on a thread that holds other isolates between their calls (see `Isolate`'s docs on
//! entering): the checker enters its own isolate for each check.

use crate::isolate::loader::module_url;
use crate::isolate::{Isolate, IsolateConfig};
use crate::registry::Function;

/// Compiles every module of `function` as an ES module, in a scratch isolate; evaluates nothing.
///
/// Returns `hello/index.js:3:7: SyntaxError: Unexpected token '}'` for the first module that fails.
/// Checking many functions? [`SyntaxChecker`] reuses one isolate.
pub fn check_syntax(function: &Function) -> Result<(), String> {
  SyntaxChecker::new()?.check(function)
}

/// A scratch isolate for parse checks. It is restored from Islet's own snapshot, like every other
/// isolate in the process: V8 shares one read-only heap between the isolates of a process, and an
/// isolate made from V8's default snapshot while others from ours are being made crashes it.
pub struct SyntaxChecker(Isolate);

impl SyntaxChecker {
  pub fn new() -> Result<Self, String> {
    Isolate::new(&IsolateConfig::default())
      .map(Self)
      .map_err(|e| format!("cannot start an isolate to check modules: {e}"))
  }

  /// Compiles `function`'s modules, each in a fresh context; evaluates nothing.
  pub fn check(&mut self, function: &Function) -> Result<(), String> {
    self.0.with_v8_isolate(|isolate| check_in(isolate, function))
  }
}

fn check_in(isolate: &mut deno_core::v8::OwnedIsolate, function: &Function) -> Result<(), String> {
  use deno_core::v8;
  v8::scope!(let scope, isolate);
  let context = v8::Context::new(scope, Default::default());
  let scope = &mut v8::ContextScope::new(scope, context);
  for (path, source) in &function.modules {
    v8::tc_scope!(let tc, scope);
    let url = module_url(&function.name, path);
    let (Some(name), Some(code)) = (v8::String::new(tc, &url), v8::String::new(tc, source)) else {
      return Err(format!("{}/{path}: module is too large", function.name));
    };
    let origin = v8::ScriptOrigin::new(tc, name.into(), 0, 0, false, 0, None, false, false, true, None);
    let mut source = v8::script_compiler::Source::new(code, Some(&origin));
    if v8::script_compiler::compile_module(tc, &mut source).is_none() {
      let Some(message) = tc.message() else {
        return Err(format!("{}/{path}: failed to compile", function.name));
      };
      let line = message.get_line_number(tc).unwrap_or(0);
      let column = message.get_start_column() + 1;
      let text = message.get(tc).to_rust_string_lossy(tc);
      let text = text.strip_prefix("Uncaught ").unwrap_or(&text);
      return Err(format!("{}/{path}:{line}:{column}: {text}", function.name));
    }
  }
  Ok(())
}
