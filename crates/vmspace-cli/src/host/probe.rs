//! Byte loads and stores that may fault, and report the fault instead of
//! dying: the host backend's `read` and `write`.
//!
//! This works like a kernel exception table. Each access is one x86-64
//! instruction in an `asm!` block that first loads two addresses into fixed
//! registers: `rcx` = the address of the access instruction, `rdx` = the
//! address just after it (the fixup), and clears `rax`. If the access faults,
//! the SIGSEGV/SIGBUS handler (running on an alternate stack) sees that the
//! saved `rip` equals the saved `rcx`, so the fault is ours: it sets the saved
//! `rip` to the fixup and the saved `rax` to the signal number, and returns.
//! The kernel resumes at the fixup, and the `asm!` block hands `rax` back: 0
//! for success, else the signal that stopped the access.
//!
//! Any other fault is a bug: the handler restores the default action and
//! returns, the instruction faults again, and the child dies of the signal,
//! which the parent reports.

use std::arch::asm;
use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::script::Outcome;

/// The size of the alternate signal stack (generous: AVX-512 frames are big).
const ALT_STACK_SIZE: usize = 64 * 1024;

/// True while a probe's access instruction may run.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Proof that the fault handlers are installed; its methods do the accesses.
pub(super) struct Probe(());

impl Probe {
    /// Installs the alternate stack and the SIGSEGV and SIGBUS handlers.
    pub(super) fn install() -> io::Result<Probe> {
        install_alt_stack()?;
        install_handler(libc::SIGSEGV)?;
        install_handler(libc::SIGBUS)?;
        Ok(Probe(()))
    }

    /// Loads the byte at `addr`: `= V`, `SEGV` or `SIGBUS`.
    pub(super) fn read(&self, addr: *const u8) -> Outcome {
        let signal: u64;
        let value: u64;
        ARMED.store(true, Ordering::SeqCst);
        // SAFETY: `addr` is inside the vmscript window, which holds no memory
        // that Rust code refers to, so the load cannot observe a Rust object.
        // If it faults, `on_fault` (installed, as `self` proves) resumes at
        // label 3 with the signal number in rax; the registers it relies on
        // are declared as clobbered outputs.
        unsafe {
            asm!(
                "lea rcx, [rip + 2f]",
                "lea rdx, [rip + 3f]",
                "xor eax, eax",
                "2:",
                "movzx esi, byte ptr [rdi]",
                "3:",
                in("rdi") addr,
                out("rax") signal,
                out("rcx") _,
                out("rdx") _,
                out("rsi") value,
                options(nostack),
            );
        }
        ARMED.store(false, Ordering::SeqCst);
        outcome(signal, Outcome::Value(value as u8))
    }

    /// Stores `value` at `addr`: `ok`, `SEGV` or `SIGBUS`.
    pub(super) fn write(&self, addr: *mut u8, value: u8) -> Outcome {
        let signal: u64;
        ARMED.store(true, Ordering::SeqCst);
        // SAFETY: as for `read`: the store goes to the vmscript window, which
        // holds no memory that Rust code refers to, and a fault resumes at
        // label 3 with the signal number in rax.
        unsafe {
            asm!(
                "lea rcx, [rip + 2f]",
                "lea rdx, [rip + 3f]",
                "xor eax, eax",
                "2:",
                "mov byte ptr [rdi], sil",
                "3:",
                in("rdi") addr,
                in("rsi") u64::from(value),
                out("rax") signal,
                out("rcx") _,
                out("rdx") _,
                options(nostack),
            );
        }
        ARMED.store(false, Ordering::SeqCst);
        outcome(signal, Outcome::Ok)
    }
}

/// The outcome of an access that ended with `signal` (0: none).
fn outcome(signal: u64, success: Outcome) -> Outcome {
    match signal {
        0 => success,
        s if s == libc::SIGBUS as u64 => Outcome::Sigbus,
        _ => Outcome::Segv,
    }
}

/// Gives this thread an alternate signal stack, leaked for the process's life.
fn install_alt_stack() -> io::Result<()> {
    let stack: &'static mut [u8] = vec![0u8; ALT_STACK_SIZE].leak();
    let alt = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: stack.len(),
    };
    // SAFETY: `alt` describes a leaked buffer that stays valid for the rest of
    // the process's life.
    if unsafe { libc::sigaltstack(&alt, ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs `on_fault` for `signal`, on the alternate stack.
fn install_handler(signal: libc::c_int) -> io::Result<()> {
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_fault;
    // SAFETY: `sigaction` is plain data for which all-zero bytes are valid.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialize.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialized and `on_fault` has the signature
    // SA_SIGINFO requires.
    if unsafe { libc::sigaction(signal, &action, ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The SIGSEGV/SIGBUS handler: recovers a probe's fault (see the module docs).
extern "C" fn on_fault(
    signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: for an SA_SIGINFO handler the kernel passes a pointer to the
    // interrupted thread's saved context, which the handler may change; the
    // kernel restores it when the handler returns.
    let context = unsafe { &mut *context.cast::<libc::ucontext_t>() };
    let regs = &mut context.uc_mcontext.gregs;
    let (rip, rcx, rdx, rax) = (
        libc::REG_RIP as usize,
        libc::REG_RCX as usize,
        libc::REG_RDX as usize,
        libc::REG_RAX as usize,
    );
    if ARMED.load(Ordering::SeqCst) && regs[rip] == regs[rcx] {
        regs[rip] = regs[rdx];
        regs[rax] = i64::from(signal);
    } else {
        // SAFETY: signal() is async-signal-safe. With the default action back,
        // the faulting instruction faults again on return and ends the process.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}
