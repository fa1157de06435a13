//! End-to-end tests: the real binaries as separate processes, talking over real UDP.
//!
//! - unicast.rs: server + clients on the host's loopback (no multicast in the host namespace).
//! - multicast.rs: server and clients in network namespaces the test creates (root: `ip netns`
//!   with a bridge; non-root: one unprivileged user+network namespace), removed even on failure.
//! - resume.rs: a client killed mid-download resumes where it stopped (R14).
//! - files.rs: safe files: two gets on one output, planted symlinks, existing outputs and
//!   --force, extract failures leaving no plaintext, a full disk, and the exit codes.
//! - hostile.rs: garbage on the request port, a damaged archive in the media database, bit rot
//!   found by the server's background check.
//! - admin.rs: idle admin connections do not stall the server; a squatted admin socket place
//!   is refused by the daemon and by loopcastctl (root: acts as two other users).
//! - attacks.rs: every attack of issue 9 end to end: forged datagrams racing genuine ones
//!   (unicast, multicast), spoofed Requests, NAK starvation, a session-table hog, the server
//!   killed, shut down or changed on disk mid-transfer, a client stopped past its timeout.
//! - check_attacks.rs: the whole-file check done while receiving (R14) against a writer that
//!   held the `.part` open from before the get; an archive changed in place with its mtime put
//!   back while served.
//! - links.rs: receivers behind 5 Mbit/s, 50 Mbit/s and unlimited `tc tbf` links, a server
//!   with no `--rate`: each finishes at its own link's pace (issue 10, R11/R12).
//! - follow.rs: `get --follow` plays the original on stdout while it downloads (R13): bytes,
//!   time to the first byte at 50 Mbit/s, a mid-loop joiner's NAK priority, a player that quits.
//! - fleet.rs: two directors and fleet servers on loopback (issue 11): routing by redirect and
//!   location, a dead director, a server killed mid-transfer (failover), forged heartbeats.
//! - packaging.rs: the systemd units verify and their command lines start the daemons; the .deb
//!   (cargo-deb) holds the binaries, units and configs, and its daemon starts; the .deb installed
//!   in a booted systemd (nspawn, private network), its units started, used and stopped.
//! - fleet_attacks.rs: a Request flood against a director (no amplification) and a slow but
//!   healthy server (no failover); the only server stalled 1.2 s (the download goes on).
//! - fleet_user.rs: the fleet as an operator meets it: errors naming every director asked,
//!   loopcastctl finding a director at its default admin socket.
//! - live.rs: what an operator changes while a server runs: SIGHUP reloads the config file
//!   (live settings applied, a broken file changes nothing), `loopcastctl stop-channel`.
//! - options.rs: loopcastd's rate options: meaningless values refused at once, the real cap logged.
//! - repair.rs: NAK repair under nftables packet loss inside namespaces (R10), and suppression
//!   of NAKs for losses every receiver shares.
//!
//! The harness is libtest-mimic (`harness = false`), so that a test the machine cannot run is
//! reported *ignored* with its reason, never "ok": each test below names what it needs
//! (`support::Need`), checked before it runs. As root (CI) nothing is ignored: a need that is
//! missing there fails the test. Filters work as with libtest (`cargo test --test e2e unicast`).
//! A new test is a `pub fn` in its module and one line in `trials()`; a test attribute does nothing here
//! (`every_e2e_test_is_registered` fails if one is left).

mod admin;
mod attacks;
mod bench;
mod check_attacks;
mod demo;
mod files;
mod fleet;
mod fleet_attacks;
mod fleet_user;
mod follow;
mod hostile;
mod links;
mod live;
mod multicast;
mod operator;
mod options;
mod packaging;
mod repair;
mod resume;
mod support;
mod unicast;

use support::{trial, Need};

/// `module::test` as the test's name, and its need.
macro_rules! e2e {
    ($module:ident :: $test:ident) => {
        trial(
            concat!(stringify!($module), "::", stringify!($test)),
            None,
            $module::$test,
        )
    };
    ($module:ident :: $test:ident, $need:expr) => {
        trial(
            concat!(stringify!($module), "::", stringify!($test)),
            Some($need),
            $module::$test,
        )
    };
}

fn trials() -> Vec<libtest_mimic::Trial> {
    vec![
        e2e!(fleet::a_director_sends_each_request_to_a_server_that_holds_the_file),
        e2e!(fleet::a_server_killed_mid_transfer_is_replaced_and_the_download_continues),
        e2e!(fleet::a_heartbeat_without_the_fleet_key_registers_nothing),
        e2e!(fleet::heartbeats_on_a_port_of_their_own_route_clients_alike),
        e2e!(fleet::a_drained_server_sends_its_clients_to_another_without_losing_their_progress),
        e2e!(
            fleet::multicast_clients_fail_over_to_another_server_in_namespaces,
            Need::RootNetns
        ),
        e2e!(
            fleet::a_cluster_of_directors_servers_and_clients_survives_a_killed_server_a_killed_director_and_a_drain,
            Need::Root("for ip netns and tc tbf links")
        ),
        e2e!(fleet_attacks::a_request_flood_is_never_answered_with_more_bytes_than_it_carried),
        e2e!(fleet_attacks::a_slow_but_healthy_server_is_never_failed_over),
        e2e!(fleet_attacks::a_stalled_only_server_does_not_end_a_download_through_a_director),
        e2e!(fleet_attacks::a_request_flood_does_not_crowd_out_heartbeats_on_their_own_port),
        e2e!(fleet_user::no_answer_from_any_director_names_every_address_asked),
        e2e!(fleet_user::loopcastctl_servers_and_files_find_a_director_at_its_default_socket),
        e2e!(admin::idle_admin_connections_stall_neither_clients_nor_status),
        e2e!(admin::loopcastctl_into_a_closed_pipe_exits_quietly),
        e2e!(admin::status_names_the_rate_bounds_in_force),
        e2e!(
            admin::admin_socket_squatting_is_refused,
            Need::Root("to act as two other users (setpriv, chown)")
        ),
        e2e!(
            admin::root_trusts_a_socket_directory_that_root_gave_to_the_daemons_user,
            Need::Root("to run a daemon as another user (setpriv, chown)")
        ),
        e2e!(attacks::reopening_a_channel_never_piles_up_archive_checks),
        e2e!(attacks::forged_race_unicast_from_another_address),
        e2e!(
            attacks::forged_race_unicast_spoofed_as_the_server,
            Need::Root("for a raw socket that spoofs the server's address")
        ),
        e2e!(
            attacks::forged_race_multicast_from_a_host_on_the_group,
            Need::RootNetns
        ),
        e2e!(
            attacks::forged_serials_ahead_do_not_poison_the_reported_loss,
            Need::RootNetns
        ),
        e2e!(
            attacks::spoofed_requests_amplify_nothing,
            Need::Root("for a raw socket that spoofs the victim's address")
        ),
        e2e!(attacks::nak_starvation_by_session_cycling_leaves_the_loop_running),
        e2e!(attacks::session_table_hog_is_limited_per_address),
        e2e!(attacks::server_killed_and_restarted_mid_transfer),
        e2e!(attacks::server_shut_down_and_restarted_mid_transfer),
        e2e!(attacks::client_stopped_past_the_session_timeout_finishes),
        e2e!(attacks::archive_bit_flip_while_served_stops_the_channel),
        e2e!(attacks::archive_truncated_while_served_stops_the_channel),
        e2e!(attacks::a_damaged_archive_served_unverified_ends_in_a_stall_that_names_the_hash_failures),
        e2e!(files::second_get_to_one_output_fails_at_once_and_the_first_completes),
        e2e!(files::symlinks_beside_the_output_are_never_followed),
        e2e!(files::existing_output_needs_force_and_a_directory_is_refused_up_front),
        e2e!(files::extract_and_pack_refuse_existing_outputs_and_leave_no_plaintext),
        e2e!(files::extract_streams_to_stdout_and_devices),
        e2e!(
            files::full_disk_is_reported_before_receiving_and_leaves_nothing,
            Need::Root("to mount a small tmpfs in a private mount namespace")
        ),
        e2e!(
            files::a_disk_that_fills_while_receiving_keeps_the_partial_download_and_says_so,
            Need::Root("to mount a small tmpfs in a private mount namespace")
        ),
        e2e!(bench::ceiling_and_send_print_one_json_object_each),
        e2e!(bench::bench_into_a_closed_pipe_exits_quietly_and_cleans_up),
        e2e!(bench::bench_options_out_of_range_are_usage_errors_naming_the_range),
        e2e!(
            bench::send_over_a_veth_bridge_in_namespaces,
            Need::RootNetns
        ),
        e2e!(
            bench::e2e_bench_moves_a_verified_file_between_namespaces,
            Need::RootNetns
        ),
        e2e!(
            bench::e2e_bench_with_link_rates_reports_each_receiver,
            Need::RootNetns
        ),
        e2e!(
            bench::e2e_bench_interrupted_leaves_no_namespaces_files_or_processes,
            Need::RootNetns
        ),
        e2e!(demo::demo_json_reports_every_client_verified),
        e2e!(demo::demo_refuses_a_client_count_it_does_not_run),
        e2e!(demo::demo_without_namespaces_says_its_network_once_in_each_stream_in_the_same_words),
        e2e!(
            demo::demo_clients_ride_multicast_in_a_private_namespace,
            Need::UserNamespace
        ),
        e2e!(hostile::garbage_requests_and_damaged_archives_do_not_hurt_the_server),
        e2e!(hostile::an_archive_damaged_on_disk_is_caught_beside_the_loop_and_then_refused),
        e2e!(hostile::a_checked_archive_is_served_without_a_second_hash_but_a_changed_one_is_hashed_and_refused),
        e2e!(hostile::forged_flooding_and_out_of_range_naks_are_counted_and_bounded),
        e2e!(check_attacks::a_writer_holding_the_part_open_from_before_the_get_cannot_slip_past_the_final_check),
        e2e!(check_attacks::an_archive_changed_in_place_with_its_mtime_put_back_stops_its_channel),
        e2e!(check_attacks::hx19_a_truncate_by_path_of_checked_groups_cannot_slip_past_the_final_check),
        e2e!(
            links::receivers_behind_5m_50m_and_unlimited_links_each_finish_at_their_own_pace,
            Need::Root("for ip netns and tc tbf links")
        ),
        e2e!(
            multicast::multicast_in_namespaces_with_a_late_joiner_and_a_unicast_peer,
            Need::Namespaces
        ),
        e2e!(
            repair::under_random_loss_naks_repair_ahead_of_the_loop,
            Need::RootNetnsNft
        ),
        e2e!(
            repair::shared_losses_are_asked_for_once_and_the_rest_suppressed,
            Need::RootNetnsNft
        ),
        e2e!(resume::killed_client_resumes_and_finishes_identical),
        e2e!(resume::a_resumed_download_asks_at_once_for_a_held_datagram_that_was_damaged),
        e2e!(resume::a_resumed_get_says_what_share_it_held_and_what_its_speed_is_over),
        e2e!(resume::an_interrupted_get_says_where_its_partial_download_is),
        e2e!(resume::a_get_whose_server_dies_says_where_its_partial_download_is),
        e2e!(follow::follow_plays_the_original_on_stdout_within_two_seconds_and_publishes_the_archive),
        e2e!(follow::a_follower_joining_mid_loop_plays_before_the_loop_wraps),
        e2e!(follow::a_player_that_quits_stops_the_download_and_keeps_it_for_resume),
        e2e!(follow::a_slow_player_gets_every_byte_and_a_clean_exit),
        e2e!(follow::follow_without_keys_refuses_an_encrypted_file_at_once),
        e2e!(follow::follow_with_the_wrong_key_database_is_a_clear_error),
        e2e!(follow::follow_again_after_the_download_says_how_to_play_it_and_how_to_download_again),
        e2e!(follow::follow_into_a_full_disk_exits_as_disk_full_and_keeps_the_download),
        e2e!(unicast::unicast_clients_one_late_get_identical_files_and_ctl_reports_status),
        e2e!(unicast::wrong_root_and_unknown_file_are_clear_errors),
        e2e!(unicast::cli_errors_are_one_line_and_nonzero),
        e2e!(unicast::arguments_that_are_not_utf8_are_paths_or_one_line_errors),
        e2e!(unicast::pack_refuses_datagrams_too_large_for_a_9000_byte_mtu),
        e2e!(options::meaningless_rate_options_are_refused_at_once),
        e2e!(options::the_start_line_states_the_cap_in_force),
        e2e!(options::serve_help_states_the_rate_defaults),
        e2e!(options::get_stall_timeout_also_bounds_the_wait_for_a_first_answer),
        e2e!(options::config_files_set_flags_and_the_command_line_wins),
        e2e!(options::metrics_endpoint_serves_the_status_counters),
        e2e!(options::get_json_usage_errors_are_json_too),
        e2e!(live::sighup_applies_the_config_file_live_and_a_broken_one_changes_nothing),
        e2e!(live::a_stopped_channel_s_client_asks_again_and_finishes_identical),
        e2e!(live::sighup_with_a_lower_rate_slows_a_running_channel_at_once),
        e2e!(live::sighup_moves_a_fleet_server_to_its_new_location_and_a_director_to_its_new_miss_count),
        e2e!(operator::sighup_with_a_new_fleet_key_warns_it_waits_for_a_restart),
        e2e!(operator::check_of_an_empty_media_directory_says_it_found_no_archives),
        e2e!(operator::check_that_cannot_record_still_counts_the_corrupt_archive),
        e2e!(operator::a_record_made_stale_by_a_chmod_is_named_in_the_servers_log),
        e2e!(operator::check_skip_recorded_hashes_only_new_or_changed_archives),
        e2e!(operator::check_skip_recorded_of_unchanged_media_writes_no_records),
        e2e!(operator::check_json_that_cannot_record_still_ends_with_a_summary),
        e2e!(operator::a_repacked_archive_is_logged_as_replaced_before_it_is_served),
        e2e!(
            packaging::systemd_units_verify_and_their_command_lines_start_the_daemons,
            Need::Program("systemd-analyze", "the Debian package systemd")
        ),
        e2e!(
            packaging::the_deb_holds_what_an_operator_needs_and_its_daemon_starts,
            Need::Program("cargo-deb", "cargo install cargo-deb")
        ),
        e2e!(
            packaging::the_deb_installs_in_a_booted_systemd_and_its_units_serve_a_client,
            Need::Root("to boot systemd in a container (systemd-nspawn) and install the .deb there")
        ),
        e2e!(unicast::one_gibibyte_file_round_trips_byte_identical),
        trial(
            "every_e2e_test_is_registered",
            None,
            every_e2e_test_is_registered,
        ),
    ]
}

/// With `harness = false` a `#[test]` function is silently never run: refuse them.
fn every_e2e_test_is_registered() {
    let attribute = ["#[", "test"].concat();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text
                .lines()
                .any(|line| line.trim_start().starts_with(&attribute)),
            "{} has a {attribute}] function, which this harness never runs: make it a pub fn and \
             add it to trials() in tests/e2e/main.rs",
            path.display()
        );
    }
}

fn main() {
    let arguments = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&arguments, trials()).exit();
}
