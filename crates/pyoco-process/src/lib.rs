//! Child processes that cannot outlive us.
//!
//! Everything pyoco-server starts — the managed nats-server (`pyoco-natsd`), the worker's
//! Python runners (`pyoco-worker`), the bench's gateways and workers (`pyoco-bench`), and the
//! processes the tests start — is set up here, the same way, by [`ChildSetup::apply`] (or its
//! shorthand [`tie_to_parent`]) on the `std::process::Command` before it is spawned (a tokio
//! `Command` hands its `std` one out with `as_std_mut()`):
//!
//! - **Own process group** (`process_group(0)`): a terminal's Ctrl-C (SIGINT to the foreground
//!   group) reaches only our process, which can then stop its children in order; and the child's
//!   group can be signalled as a whole (`killpg`), which takes whatever the child started with it
//!   (a wrapper script that forgot `exec`, a task's own subprocesses).
//! - **Killed with us** (Linux): `PR_SET_PDEATHSIG = SIGKILL`, so the kernel SIGKILLs the child
//!   when we die, however we die (SIGKILL, a crash, `std::process::exit` skipping destructors).
//!   The flag is set between `fork` and `exec`. Had our process died before `prctl`, the child
//!   would already have been re-parented and no signal would ever come: so the child then checks
//!   that `getppid()` is still our pid and fails to start instead of running unsupervised.
//!   (Only the death of the whole process opens that window: the forking thread itself waits in
//!   `spawn` until the child has called `exec`.)
//! - **Inherited descriptors** ([`ChildSetup::inherit_fd`]): a descriptor the child must keep
//!   (e.g. the nats-server store-dir lock) has its `FD_CLOEXEC` cleared in the child only, so no
//!   other child spawned meanwhile inherits it.
//!
//! # Which thread forks matters
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not when the process
//! does. A child spawned from a thread that ends early is killed at that moment, healthy or not:
//!
//! - never spawn from `tokio::task::spawn_blocking` (blocking-pool threads exit after 10 s
//!   idle), nor inside `block_in_place` (the worker thread it runs on may be retired);
//! - spawning from an async task is fine: tokio's worker threads (and the `block_on` thread) live
//!   as long as the runtime, and the runtime as long as the program that owns the children;
//! - a component that must outlive whatever runtime its caller uses spawns from a dedicated
//!   thread that lives exactly as long as its children (what `pyoco-natsd`'s supervisor does).
//!
//! If such a thread ever ends too early (a panic), the kernel kills its children with it: the
//! safe direction.
//!
//! `PR_SET_PDEATHSIG` is not inherited across `fork`: a child's own children are covered only
//! if the child sets them up likewise, or if the child `exec`s them in its place.
//!
//! # Other systems
//!
//! Other Unixes get the process group and the inherited descriptors, not the kernel-side kill:
//! there, callers must stop their children themselves (on drop, on SIGINT/SIGTERM). On other
//! systems [`ChildSetup::apply`] does nothing.

use std::process::Command;

#[cfg(unix)]
use std::os::fd::RawFd;

/// How to set up a child process between `fork` and `exec`; see the crate docs.
///
/// ```no_run
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("60");
/// pyoco_process::ChildSetup::new().apply(&mut cmd);
/// let child = cmd.spawn()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    #[cfg(unix)]
    inherit: Vec<RawFd>,
}

impl ChildSetup {
    /// Own process group and, on Linux, killed with us.
    pub fn new() -> Self {
        ChildSetup::default()
    }

    /// Keep `fd` open across `exec` in the child (its `FD_CLOEXEC` is cleared in the child
    /// only). `fd` must stay open in our process until the child has been spawned.
    #[cfg(unix)]
    pub fn inherit_fd(mut self, fd: RawFd) -> Self {
        self.inherit.push(fd);
        self
    }

    /// Set `cmd` up (see the crate docs). Spawn it from a thread that lives as long as the
    /// child should ("Which thread forks matters").
    #[cfg(unix)]
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        use std::os::unix::process::CommandExt;

        cmd.process_group(0);
        let inherit = self.inherit.clone();
        #[cfg(target_os = "linux")]
        let parent = nix::unistd::getpid();
        let hook = move || -> std::io::Result<()> {
            for &fd in &inherit {
                // SAFETY: fcntl(F_SETFD, 0) only clears FD_CLOEXEC on a descriptor the caller
                // keeps open until the spawn (`inherit_fd`); a bad descriptor is an error, no UB.
                if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) } == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            #[cfg(target_os = "linux")]
            {
                use nix::sys::prctl::set_pdeathsig;
                use nix::sys::signal::Signal;
                set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // Our process died between fork and prctl: we are an orphan already.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
            }
            Ok(())
        };
        // SAFETY: the hook runs in the forked child of a possibly multi-threaded process, where
        // only async-signal-safe calls are allowed. It makes plain system calls (`fcntl`,
        // `prctl`, `getppid`), iterates a vector allocated before the fork, and allocates
        // nothing: its `io::Error`s are bare OS error codes.
        unsafe {
            cmd.pre_exec(hook);
        }
        cmd
    }

    /// Nothing to set up on this system.
    #[cfg(not(unix))]
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd
    }
}

/// [`ChildSetup::new`]`().apply(cmd)`: own process group and, on Linux, killed with us.
pub fn tie_to_parent(cmd: &mut Command) -> &mut Command {
    ChildSetup::new().apply(cmd)
}
