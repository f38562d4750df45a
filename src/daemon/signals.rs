//! Termination signals (SIGTERM, SIGINT, SIGHUP) handled by a thread of their own: a process
//! blocks them before it starts any other thread, so every thread inherits the mask and only
//! the waiting thread receives them, and it acts outside any signal handler.

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the termination signals in the calling thread (and so in the threads it starts
/// afterwards). Child processes start with an empty mask again (std resets it).
pub fn block_termination() {
    let set = termination_set();
    // SAFETY: changes this thread's signal mask with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Starts a thread that waits for the first termination signal and calls `then` with it.
/// The signals must be blocked already ([`block_termination`]).
pub fn on_termination(name: &str, then: impl FnOnce(i32) + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let set = termination_set();
            let mut sig = 0;
            // SAFETY: sigwait with a valid set and an out-parameter on this stack.
            unsafe { libc::sigwait(&set, &mut sig) };
            then(sig);
        });
}
