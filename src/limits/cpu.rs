//! CPU time spent running JavaScript, and the watchdog that stops a slice which runs too long.
//!
//! Every entry into an isolate's JavaScript is a [`Slice`]. Reading a thread's CPU clock costs a
//! system call (~0.7 µs here), too much for every slice of every request, so the isolate thread
//! only reads the cheap monotonic clock when a slice begins. A watchdog thread wakes at most every
//! [`MAX_TICK`], and reads the CPU clock of each isolate thread whose slice has run for
//! [`FIRST_LOOK`] or more; from then on it measures that slice in CPU time. A shorter slice is
//! charged its wall time (it cannot have used more CPU than that); a longer one is charged what
//! the thread's CPU clock says from the watchdog's first look, so a thread that is preempted is not
//! charged for the time it waited. The watchdog sleeps until the earliest moment a running slice
//! could pass its budget (never less than [`MIN_TICK`]), and when a slice's CPU time passes the
//! budget it began with, it terminates the isolate (`IsolateHandle::terminate_execution`), about a
//! millisecond late. An idle node wakes it 200 times a second.
//!
//! A slice can also stop making progress without using CPU: a thread blocked in a system call or
//! a lock inside an op. CPU time never reaches the budget then, so each slice also has a wall
//! budget ([`stuck_after`]), far above any CPU budget's wall time on a busy machine; past it the
//! watchdog terminates the slice all the same, and [`SliceEnd::stuck`] says why.
//!
//! The mutex around each thread's running slice is what makes termination exact: the watchdog
//! terminates only while it holds it and sees the slice still running, and the isolate thread ends
//! a slice under the same mutex, so a termination can never land on a slice it was not meant for
//! without the isolate thread learning of it (see [`SliceEnd::terminated`]).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use deno_core::v8;

/// The watchdog's longest sleep: how late it may first see a slice.
const MAX_TICK: Duration = Duration::from_millis(5);
/// The watchdog's shortest sleep: the precision of a CPU limit.
const MIN_TICK: Duration = Duration::from_millis(1);
/// A slice younger than this is not worth a CPU clock read (a system call, made while the
/// isolate thread may be waiting to end its slice).
const FIRST_LOOK: Duration = Duration::from_millis(1);

/// One isolate thread as the watchdog sees it.
struct ThreadClock {
  /// The thread's CPU clock, readable from any thread; `None` where the OS would not give it, in
  /// which case slices are measured in wall time.
  clock: Option<libc::clockid_t>,
  slice: Mutex<Option<Running>>,
}

/// The slice a thread is running.
struct Running {
  started: Instant,
  /// CPU time the slice may use before it is terminated.
  budget: Duration,
  /// Wall time the slice may take, on the CPU or off it, before it is terminated.
  wall_budget: Duration,
  isolate: v8::IsolateHandle,
  /// The thread's CPU clock when the watchdog first saw the slice, and the wall time the slice had
  /// run by then (charged as CPU: it is at most a tick).
  first_seen: Option<(Duration, Duration)>,
  /// The CPU time at which the watchdog terminated the slice.
  terminated_at: Option<Duration>,
  /// The watchdog terminated the slice for its wall time, not its CPU time.
  stuck: bool,
}

impl Running {
  /// CPU time used so far, given the thread's CPU clock now.
  fn used(&self, cpu_now: Option<Duration>) -> Duration {
    match (self.first_seen, cpu_now) {
      (Some((cpu_then, before)), Some(cpu_now)) => before + cpu_now.saturating_sub(cpu_then),
      _ => self.started.elapsed(),
    }
  }
}

fn lock(slice: &Mutex<Option<Running>>) -> MutexGuard<'_, Option<Running>> {
  slice.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_clock(clock: libc::clockid_t) -> Option<Duration> {
  let mut now = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
  };
  // SAFETY: `now` is a valid timespec to write into.
  let rc = unsafe { libc::clock_gettime(clock, &mut now) };
  (rc == 0).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

thread_local! {
  static THIS_THREAD: Arc<ThreadClock> = register_this_thread();
}

fn register_this_thread() -> Arc<ThreadClock> {
  let mut clock: libc::clockid_t = 0;
  // SAFETY: pthread_self() is the calling thread, alive for the call; `clock` is writable.
  let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
  if rc != 0 {
    tracing::warn!("no CPU clock for this isolate thread (error {rc}); CPU limits use wall time");
  }
  let thread = Arc::new(ThreadClock {
    clock: (rc == 0).then_some(clock),
    slice: Mutex::new(None),
  });
  let threads = watchdog();
  threads
    .lock()
    .unwrap_or_else(|e| e.into_inner())
    .push(Arc::downgrade(&thread));
  thread
}

/// Starts the watchdog thread now, from the calling thread, rather than from the first isolate
/// thread to time a slice: a thread inherits its creator's CPU affinity, and the watchdog must be
/// free to run on any CPU, above all beside a thread that spins.
pub fn start_watchdog() {
  watchdog();
}

/// The threads the watchdog looks after; starts the watchdog on first use.
fn watchdog() -> &'static Mutex<Vec<Weak<ThreadClock>>> {
  static THREADS: OnceLock<Mutex<Vec<Weak<ThreadClock>>>> = OnceLock::new();
  THREADS.get_or_init(|| {
    let spawned = std::thread::Builder::new()
      .name("islet-cpu-watchdog".into())
      .spawn(|| {
        let mut sleep = MAX_TICK;
        loop {
          std::thread::sleep(sleep);
          sleep = tick(watchdog());
        }
      });
    if let Err(err) = spawned {
      // Without a watchdog a loop would hold its thread for ever: refuse to run.
      panic!("cannot start the CPU watchdog: {err}");
    }
    Mutex::new(Vec::new())
  })
}

/// One look at every isolate thread: terminates the slices past their budget, and returns how
/// long to sleep before the next look.
fn tick(threads: &Mutex<Vec<Weak<ThreadClock>>>) -> Duration {
  let mut sleep = MAX_TICK;
  let mut threads = threads.lock().unwrap_or_else(|e| e.into_inner());
  threads.retain(|thread| {
    let Some(thread) = thread.upgrade() else {
      return false;
    };
    let mut slice = lock(&thread.slice);
    let Some(running) = slice.as_mut().filter(|r| r.terminated_at.is_none()) else {
      return true;
    };
    let age = running.started.elapsed();
    if age > running.wall_budget {
      // Stuck off the CPU (or on it, with a CPU clock that does not move): stopped either way.
      running.terminated_at = Some(running.used(thread.clock.and_then(read_clock)));
      running.stuck = true;
      running.isolate.terminate_execution();
      return true;
    }
    if running.first_seen.is_none() && age < FIRST_LOOK {
      sleep = sleep.min(running.budget.saturating_sub(age));
      return true;
    }
    let cpu_now = thread.clock.and_then(read_clock);
    if running.first_seen.is_none() {
      // Charged as CPU up to what one tick could hide: a watchdog that was itself kept off the CPU
      // and looks late must not charge a slice for the time it was not looking.
      running.first_seen = cpu_now.map(|cpu| (cpu, age.min(MAX_TICK)));
    }
    let used = running.used(cpu_now);
    if used > running.budget {
      running.terminated_at = Some(used);
      running.isolate.terminate_execution();
    } else {
      sleep = sleep
        .min(running.budget - used)
        .min(running.wall_budget.saturating_sub(age));
    }
    true
  });
  sleep.max(MIN_TICK)
}

/// The entry into JavaScript being timed on this thread; see the module docs. One at a time per
/// thread, as V8 only runs one isolate per thread at a time.
#[must_use = "a slice must be ended to learn whether it was terminated"]
pub struct Slice(());

/// What a slice cost, and whether the watchdog stopped it.
#[derive(Debug, Clone, Copy)]
pub struct SliceEnd {
  /// CPU time the slice used (see the module docs for how it is measured): what it is charged.
  pub cpu: Duration,
  /// The part of `cpu` read from the thread's CPU clock, from the watchdog's first look to the end
  /// (zero for a slice it never saw). Unlike `cpu`, it never counts time the thread spent
  /// preempted or its CPU stolen by the host, so it says how heavy the JavaScript really was.
  pub clocked: Duration,
  /// The watchdog terminated the isolate during this slice: it must be discarded.
  pub terminated: bool,
  /// The slice was terminated because it took longer than its wall budget, whatever its CPU.
  pub stuck: bool,
}

/// The wall time a slice with a CPU `budget` may take before the watchdog treats it as stuck:
/// twice its budget and two seconds more, so that a slice kept off the CPU by a busy machine is
/// never mistaken for one blocked for good.
pub fn stuck_after(budget: Duration) -> Duration {
  budget.saturating_mul(2).saturating_add(Duration::from_secs(2))
}

impl Slice {
  /// Starts timing JavaScript on this thread for `isolate`, which may use `budget` of CPU and
  /// take [`stuck_after`] that budget in wall time.
  pub fn begin(isolate: &v8::IsolateHandle, budget: Duration) -> Slice {
    Self::begin_with_wall(isolate, budget, stuck_after(budget))
  }

  /// [`Slice::begin`] with the wall budget given.
  pub fn begin_with_wall(isolate: &v8::IsolateHandle, budget: Duration, wall_budget: Duration) -> Slice {
    THIS_THREAD.with(|thread| {
      *lock(&thread.slice) = Some(Running {
        started: Instant::now(),
        budget,
        wall_budget,
        isolate: isolate.clone(),
        first_seen: None,
        terminated_at: None,
        stuck: false,
      });
    });
    Slice(())
  }

  pub fn end(self) -> SliceEnd {
    THIS_THREAD.with(|thread| {
      let Some(running) = lock(&thread.slice).take() else {
        return SliceEnd {
          cpu: Duration::ZERO,
          clocked: Duration::ZERO,
          terminated: false,
          stuck: false,
        };
      };
      // The CPU clock is read only for slices the watchdog saw: long ones, where it is worth it.
      let cpu_now = running.first_seen.and(thread.clock).and_then(read_clock);
      let used = running.used(cpu_now);
      let clocked = match (running.first_seen, cpu_now) {
        (Some((cpu_then, _)), Some(cpu_now)) => cpu_now.saturating_sub(cpu_then),
        // Without a CPU clock, wall time is all there is.
        _ if thread.clock.is_none() => used,
        _ => Duration::ZERO,
      };
      SliceEnd {
        cpu: running.terminated_at.map_or(used, |at| at.max(used)),
        clocked,
        terminated: running.terminated_at.is_some(),
        stuck: running.stuck,
      }
    })
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn timed(isolate: &v8::IsolateHandle, work: impl FnOnce()) -> SliceEnd {
    let slice = Slice::begin(isolate, Duration::from_secs(10));
    work();
    slice.end()
  }

  #[test]
  fn a_slice_that_waits_is_not_clocked_as_heavy() {
    // From Islet's snapshot, as every isolate in the process must be (`isolate::bare_runtime`).
    let mut runtime = crate::isolate::bare_runtime();
    let handle = runtime.v8_isolate().thread_safe_handle();
    // Waiting off the CPU stands in for a thread preempted, or a vCPU stolen by the host.
    let waited = timed(&handle, || std::thread::sleep(Duration::from_millis(40)));
    assert!(waited.clocked < Duration::from_millis(5), "{waited:?}");
    assert!(!waited.terminated);
    // Spinning on the CPU is clocked.
    let spun = timed(&handle, || {
      let start = Instant::now();
      while start.elapsed() < Duration::from_millis(60) {
        std::hint::spin_loop();
      }
    });
    assert!(spun.clocked >= Duration::from_millis(5), "{spun:?}");
    assert!(spun.cpu >= spun.clocked, "{spun:?}");
  }

  #[test]
  fn a_slice_blocked_off_the_cpu_past_its_wall_budget_is_terminated_as_stuck() {
    start_watchdog();
    let mut runtime = crate::isolate::bare_runtime();
    let handle = runtime.v8_isolate().thread_safe_handle();
    // A thread blocked for good stands in for a blocking call inside an op: it uses no CPU.
    let slice = Slice::begin_with_wall(&handle, Duration::from_secs(10), Duration::from_millis(30));
    std::thread::sleep(Duration::from_millis(120));
    let end = slice.end();
    assert!(end.terminated, "{end:?}");
    assert!(end.stuck, "{end:?}");
    assert!(end.clocked < Duration::from_millis(5), "{end:?}");
    // A slice within its wall budget is neither.
    let end = timed(&handle, || std::thread::sleep(Duration::from_millis(5)));
    assert!(!end.terminated && !end.stuck, "{end:?}");
  }
}
