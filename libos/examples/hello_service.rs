//! The smallest service: `docknet::main!` owns the process entry; the app gets the engine.
//! `DOCKNET_PIPE=/tmp/dn/pipes/a cargo run -p docknet --example hello_service`, then
//! `nc`/`curl` to port 7 through a NIC, or `dn-echo client` from another pipe.

use docknet::runtime::AppResult;
use docknet::{Control, Engine};

fn app(engine: &mut Engine) -> AppResult {
    let listener = engine.listen(7, 4)?;
    println!(
        "hello_service: {}:7, answering each connection with a greeting",
        engine.local_ip()
    );
    engine.run(|e| {
        while let Some(id) = e.accept(listener) {
            let _ = e.write(id, b"hello from the DockNet libOS\n");
            let _ = e.close(id);
        }
        Control::Continue
    });
    Ok(())
}

docknet::main!(app);
