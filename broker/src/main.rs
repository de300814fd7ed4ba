use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                // openraft narrates every state change at info.
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match skiff_broker::config::BrokerConfig::load_from(std::env::args_os()) {
        Ok(c) => c,
        Err(skiff_broker::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("skiff-broker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skiff-broker: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(skiff_broker::server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("skiff-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// jemalloc maps large blocks with MAP_NORESERVE when the kernel overcommits,
// so a preposterous array length in a malformed request (kafka-protocol sizes
// `Vec::with_capacity` from the wire before decoding) reserves address space
// instead of aborting the process; the decode then fails on the short frame.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
