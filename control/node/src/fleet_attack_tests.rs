//! A server whose catalog does not fit the heartbeat pages (R15).

use std::time::Duration;

use loopcast_proto::director::{Director, DirectorConfig, Route};
use loopcast_proto::info::RootHash;
use loopcast_proto::time::Instant;
use loopcast_proto::wire::control::RequestHints;
use loopcast_proto::wire::fleet::{CatalogEntry, FleetKey, CATALOG_PAGES_MAX};

use super::{FleetConfig, HeartbeatSender, Load};

/// More files than `CATALOG_PAGES_MAX` pages hold (long names: 7 a page): the server announces
/// what fits and says so in its log. The files it announces must be routable; before, the
/// digest covered every file while the pages held only some, so no director ever took the
/// catalog and not one file of that server was routable.
#[test]
fn a_catalog_larger_than_the_pages_still_announces_what_fits() {
    let key = FleetKey::from_secret(b"the fleet's secret, long enough").unwrap();
    let advertise = "10.0.0.1:7700".parse().unwrap();
    let config = FleetConfig {
        directors: vec!["10.0.0.9:7700".parse().unwrap()],
        key: key.clone(),
        advertise,
        location: String::new(),
        interval: Duration::from_millis(250),
        rate_bits_per_s_max: 0,
    };
    let unix_ms = 1_800_000_000_000;
    let mut sender = HeartbeatSender::new(config, 42, unix_ms);
    let files = CATALOG_PAGES_MAX * 8;
    let entries: Vec<CatalogEntry> = (0..files)
        .map(|i| CatalogEntry {
            name: format!("{i:06}-{}", "n".repeat(120)),
            root: RootHash([7; 32]),
            bytes: 1,
        })
        .collect();
    let first = entries[0].name.clone();
    sender.set_catalog(entries);
    let mut director = Director::new(DirectorConfig::new(key));
    let load = Load {
        sessions: 0,
        sessions_max: 0,
        channels: 0,
        rate_bits_per_s: 0,
    };
    for i in 0..=CATALOG_PAGES_MAX as u64 {
        let now = Instant::from_nanos(i * 1_000_000);
        let bytes = sender.next(now, unix_ms + i, &load);
        director.handle_datagram(now, unix_ms + i, advertise, &bytes);
    }
    assert_eq!(
        director.route(&first, &RequestHints::default()),
        Route::To(advertise),
        "a file the server announces is routable"
    );
}
