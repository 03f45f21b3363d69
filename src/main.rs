//! `vigil`: parse the command line, set up logging, run the command ([`vigil::cli`]).

use clap::Parser;

fn main() -> std::process::ExitCode {
    // glibc gives threads that allocate their own malloc arenas (up to 8 per core), whose free
    // pages stay resident; two are enough here and lowered peak RSS by 5-7 % in `vigil bench`.
    // Blocks of 256 KiB and more (video frames, tensors, pools) are mapped and unmapped on their
    // own: glibc otherwise raises its mmap threshold to the largest block freed, frames then come
    // from the arenas, and their holes kept the main heap at 37-325 MB at the peak of one
    // 16-camera bench to the next (peak RSS 446-584 MB); with it 443 MB twice (docs "Memory").
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    // what vigil writes — masked clips with faces, sessions, the access log, keys, the outbox — is
    // for its own user only (files 0600, folders 0700), whatever umask it was started with;
    // public keys are made 0644 on purpose
    unsafe {
        libc::umask(0o077);
    }
    let cli = vigil::cli::Cli::parse();
    vigil::cli::init_logs(cli.log_format);
    vigil::cli::dispatch(cli.cmd)
}
