//! The conformance suite: every test body is written once, generic over the backend, and run
//! against each backend by `conformance_suite!` (see `tests/memory.rs` and
//! `tests/postgres_conformance.rs`).

#![allow(dead_code)]

#[path = "../../examples/banking/domain.rs"]
pub mod banking;
#[path = "../support/wait.rs"]
mod wait;
pub use wait::until;
pub mod cache;
pub mod commands;
pub mod concurrency;
pub mod discovery;
#[path = "../../examples/ecommerce/domain.rs"]
pub mod ecommerce;
pub mod expected_events;
pub mod handover;
pub mod inputs;
pub mod process;
pub mod projection;
pub mod projection_snapshots;
#[path = "../support/quiet_manager.rs"]
pub mod quiet_manager;
pub mod replies;
#[path = "../../examples/saga/domain.rs"]
pub mod saga;
pub mod snapshots;
pub mod store;
pub mod subscription;

/// A retry policy that outlasts any contention the concurrency tests create, with short waits.
pub fn patient() -> eventcore::RetryPolicy {
    eventcore::RetryPolicy::builder()
        .max_attempts(10_000)
        .base_delay(std::time::Duration::from_micros(100))
        .max_delay(std::time::Duration::from_millis(5))
        .build()
        .unwrap()
}

/// Expands to one `#[tokio::test]` per conformance test, each with a fresh store from `$make`
/// (an expression evaluating to a future of the backend).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@tests $make;
            store::versions_start_at_one_without_gaps,
            store::append_is_atomic_across_streams,
            store::expected_version_of_a_read_only_stream_is_checked,
            store::write_to_an_unread_stream_is_invalid,
            store::idempotency_key_appends_once,
            store::wrong_expected_versions_are_conflicts,
            store::an_empty_write_is_a_read,
            store::read_all_pages_in_global_order,
            store::stream_ids_are_stored_verbatim,
            store::an_event_id_is_stored_once,
            store::a_request_sent_again_after_it_committed_is_a_conflict,
            store::imported_ids_out_of_order_are_each_stored_once,
            store::json_nested_too_deep_to_read_back_is_refused,
            store::an_event_stamped_before_the_earliest_time_is_refused,
            store::oversized_payload_is_rejected_whole,
            store::requests_beyond_the_stores_limits_are_refused_alike,
            store::metadata_round_trips,
            expected_events::a_named_event_is_checked_at_its_expected_version,
            expected_events::a_named_event_must_match_the_expected_version,
            expected_events::named_events_are_checked_in_concurrent_appends,
            expected_events::a_conflict_names_the_first_stream_in_request_order,
            inputs::hostile_stream_ids_are_stored_byte_for_byte,
            inputs::look_alike_stream_ids_are_different_streams,
            inputs::ids_that_would_need_changing_are_refused_when_built,
            inputs::idempotency_keys_are_kept_exactly,
            inputs::nul_outside_payloads_is_refused_alike_and_payloads_keep_it,
            inputs::lone_surrogates_are_refused_and_pairs_kept,
            commands::banking_scenario,
            commands::rejection_writes_nothing,
            commands::undecodable_event_is_a_typed_error,
            commands::encode_failure_writes_nothing,
            commands::a_non_finite_float_is_refused_and_writes_nothing,
            commands::a_float_reads_back_as_written,
            commands::lost_reply_with_idempotency_key_does_not_apply_twice,
            replies::a_keyed_command_sent_again_answers_with_its_first_run,
            replies::a_keyed_command_that_now_writes_nothing_answers_with_its_first_run,
            replies::a_rejected_first_run_stores_no_key,
            replies::a_key_sent_with_another_request_is_refused,
            replies::a_key_sent_with_another_amount_is_refused,
            replies::naming_fields_for_a_command_whose_keys_are_in_use_refuses_nothing,
            replies::requests_racing_under_one_key_commit_once,
            replies::the_fingerprint_is_stored_with_the_key,
            replies::a_keyed_command_with_any_name_is_replayed,
            replies::commands_named_alike_after_a_colon_are_told_apart,
            commands::a_failed_append_writes_nothing,
            commands::transient_read_failure_is_retried,
            commands::context_metadata_is_stored,
            commands::events_are_stored_in_emission_order,
            concurrency::write_skew_is_impossible,
            concurrency::counter_under_contention_has_no_gaps,
            concurrency::commands_over_shared_streams_take_turns_in_one_process,
            concurrency::concurrent_transfers_conserve_money,
            concurrency::conflict_retries_from_fresh_state,
            handover::a_waiting_command_takes_the_stream_over,
            handover::streams_taken_over_never_hide_an_event,
            handover::streams_nobody_waits_for_stay_within_the_allowance,
            handover::a_waiter_that_leaves_does_not_keep_streams_past_the_allowance,
            discovery::ecommerce_scenario,
            discovery::cancelling_twice_restores_stock_once,
            discovery::concurrent_cancellations_restore_stock_once,
            discovery::concurrent_orders_never_oversell,
            discovery::product_changed_after_discovery_is_retried,
            discovery::streams_read_in_every_round_are_validated,
            discovery::emitting_to_an_undiscovered_product_is_a_typed_error,
            discovery::a_stream_read_again_in_a_later_round_must_not_move,
            discovery::a_keyed_command_whose_last_attempt_conflicts_answers_with_its_lost_commit,
            cache::cached_streams_are_not_read_again,
            cache::a_stale_cache_conflicts_and_the_fresh_pass_commits,
            cache::assumed_empty_streams_are_checked_like_cached_ones,
            cache::a_stale_cache_never_rejects_what_the_store_allows,
            cache::concurrent_cached_executors_conserve_money,
            cache::many_cached_executors_on_many_accounts_conserve_money,
            cache::the_cache_stays_within_its_limit,
            cache::cached_streams_are_decoded_once,
            cache::an_undecodable_cached_event_fails_every_time,
            snapshots::a_snapshot_is_taken_per_policy_and_later_commands_read_only_later_events,
            snapshots::a_snapshot_that_fits_is_trusted,
            snapshots::a_snapshot_of_another_state_type_is_discarded,
            snapshots::a_snapshot_of_another_state_version_is_discarded,
            snapshots::an_undecodable_snapshot_is_discarded,
            snapshots::a_snapshot_beyond_the_stream_is_discarded,
            snapshots::a_snapshot_over_other_events_at_its_version_is_discarded,
            snapshots::a_snapshot_without_its_covered_event_is_discarded,
            snapshots::a_snapshot_of_other_streams_is_discarded,
            snapshots::snapshots_and_the_stream_cache_agree,
            snapshots::a_snapshot_that_cannot_be_stored_fails_nothing,
            snapshots::a_snapshot_over_two_streams_is_keyed_by_their_slots,
            snapshots::a_discovering_command_folds_discovered_streams_in_full,
            snapshots::a_snapshot_of_a_float_state_is_restored_exactly,
            snapshots::pruning_deletes_the_snapshots_saved_before_the_age_given,
            subscription::a_subscription_catches_up_then_goes_live,
            subscription::a_subscription_resumes_after_its_checkpoint,
            subscription::a_quiet_filter_still_moves_its_checkpoint,
            subscription::a_page_never_looks_past_the_last_event,
            subscription::filters_match_categories_and_types_literally,
            subscription::a_typed_subscription_reports_undecodable_events_in_place,
            subscription::a_batch_never_holds_more_than_a_page,
            subscription::writers_and_subscribers_agree_on_every_event,
            projection::a_projection_applies_history_then_live_and_callers_read_their_writes,
            projection::the_lag_counts_up_to_its_limit,
            projection::a_failing_handler_is_retried_then_stops_with_the_error_visible,
            projection::a_poison_event_is_parked_and_the_projection_goes_on,
            projection::an_event_of_a_newer_schema_version_stops_even_a_parking_projection,
            projection::an_event_of_a_newer_schema_version_behind_a_transparent_error_is_not_parked,
            projection::a_standby_takes_over_without_losing_or_repeating_events,
            projection::a_new_version_catches_up_beside_the_old_one,
            projection::a_projection_need_not_be_sync,
            projection::a_runner_with_a_filter_no_stream_can_pass_is_refused,
            projection::a_runner_whose_log_reads_outlast_its_poll_interval_keeps_up,
            projection::a_batch_whose_commit_reply_is_lost_is_applied_once,
            projection::a_begin_that_fails_mid_batch_applies_nothing_twice,
            projection::a_lease_longer_than_the_longest_is_refused,
            projection::a_projection_named_like_a_process_manager_is_refused,
            projection::a_runner_far_behind_is_not_reported_live,
            projection::a_stopped_runner_reports_the_checkpoint_it_committed,
            projection::the_lag_counts_old_events_behind_a_quiet_stretch,
            projection::an_event_whose_failure_quotes_a_nul_is_parked,
            projection::a_projection_named_with_a_nul_is_refused,
            projection::a_projection_name_too_long_to_store_is_refused,
            projection::parked_events_are_answered_once_in_position_order,
            projection::parked_events_reach_the_fixed_handler_once,
            projection::a_retried_parked_event_whose_commit_reply_is_lost_is_applied_once,
            projection::a_discarded_parked_event_is_never_applied,
            projection::a_parked_event_is_retried_only_under_the_lease,
            projection::a_store_failure_while_retrying_a_parked_event_reports_retrying,
            projection::the_store_lists_its_projections,
            projection::a_runner_starting_while_the_store_is_away_reports_retrying,
            projection::a_runner_whose_task_ends_without_stopping_reports_stopped,
            projection::a_batch_longer_than_the_lease_commits_once,
            projection::a_batch_longer_than_the_lease_parks_its_failing_event,
            projection::a_runner_whose_handler_hangs_lets_a_standby_take_over,
            projection::wait_for_on_a_standby_follows_the_active_runners_checkpoint,
            projection::a_runner_run_until_stopped_hands_over_at_once,
            projection::a_renewal_that_fails_within_a_batch_is_reported,
            process::a_process_batch_longer_than_the_lease_commits,
            projection_snapshots::a_restarted_projection_resumes_from_its_snapshot,
            projection_snapshots::the_snapshot_policy_is_honoured,
            projection_snapshots::a_standby_resumes_from_the_snapshot_after_a_crash,
            projection_snapshots::a_retried_batch_applies_nothing_twice_to_the_state,
            projection_snapshots::a_restarted_projection_catches_up_to_its_checkpoint_without_committing,
            projection_snapshots::a_projection_that_applied_the_log_again_keeps_a_snapshot,
            projection_snapshots::a_parked_event_stays_out_of_the_state_after_a_restart,
            projection_snapshots::a_discarded_parked_event_stays_out_of_the_state_after_a_restart,
            projection_snapshots::a_projection_snapshot_that_fits_is_trusted,
            projection_snapshots::a_projection_snapshot_of_another_version_is_discarded,
            projection_snapshots::a_projection_snapshot_of_another_type_is_discarded,
            projection_snapshots::an_undecodable_projection_snapshot_is_discarded,
            projection_snapshots::a_projection_snapshot_over_other_events_is_discarded,
            projection_snapshots::a_projection_snapshot_without_its_last_event_is_discarded,
            projection_snapshots::a_projection_snapshot_is_stored_only_with_its_checkpoint,
            projection_snapshots::a_projection_snapshot_past_events_it_never_applied_is_discarded,
            projection_snapshots::a_projection_snapshot_past_skipped_and_parked_events_is_trusted,
            projection_snapshots::retrying_parked_events_with_snapshots_is_refused,
            process::a_saga_runs_each_order_to_exactly_one_final_state,
            process::the_causation_chain_of_a_saga_is_recorded,
            process::a_saga_aborted_and_restarted_runs_every_command_once,
            process::overlapping_runners_on_short_leases_run_every_command_once,
            process::a_technical_failure_is_retried_then_stops_the_saga,
            process::a_paid_order_is_never_cancelled_by_a_late_payment_timer,
            process::a_process_manager_observes_an_event_too_large_to_copy,
            process::a_reaction_to_a_rejection_or_a_timeout_that_fails_once_is_retried,
            process::a_rejection_whose_record_reply_was_lost_is_still_compensated,
            process::a_timer_whose_record_reply_was_lost_still_fires,
            process::a_timeout_whose_record_reply_was_lost_is_still_handled,
            process::a_takeover_leaves_alone_the_inputs_whose_reactions_all_ran,
            process::a_takeover_handles_the_inputs_whose_reactions_did_not_all_run,
            process::a_timer_set_for_duration_max_is_due_at_the_latest_time,
            process::a_process_runner_with_a_lease_longer_than_the_longest_is_refused,
            process::a_process_manager_stops_before_an_event_it_cannot_read,
            process::a_process_manager_named_with_a_dash_is_refused,
            process::a_process_runner_far_behind_is_not_reported_live,
            process::an_input_reads_and_folds_only_what_its_instance_gained,
            process::a_process_instance_too_long_for_a_stream_name_still_runs,
            process::a_process_manager_outlasts_a_store_outage,
            process::a_process_manager_outlasts_a_store_slower_than_its_executor_timeout,
            process::a_command_refused_for_a_reused_key_is_handed_to_the_process_as_a_rejection,
            process::a_rejection_with_a_reason_longer_than_the_store_takes_is_still_handled,
            process::a_keyed_command_that_wrote_nothing_for_a_process_runs_again,
            process::wait_for_on_a_standby_process_runner_follows_the_active_one,
            process::a_process_runner_run_until_stopped_hands_over_at_once,
            process::an_instance_named_like_the_digest_of_another_has_a_stream_of_its_own,
            process::a_process_manager_named_too_long_for_its_streams_is_refused,
            process::a_process_record_the_runner_cannot_read_stops_it_at_takeover,
            process::a_process_manager_following_every_event_does_not_feed_on_process_records,
            process::a_rejection_recorded_with_a_mark_whose_reply_was_lost_is_still_compensated,
            process::a_takeover_reads_only_the_records_written_since_the_last_one,
            process::a_takeover_reads_everything_when_the_log_is_not_the_one_kept,
            process::an_input_a_takeover_left_unhandled_is_handled_by_the_next,
            process::a_running_runner_keeps_the_takeover_snapshot_up_to_date,
            process::a_takeover_reading_for_longer_than_its_lease_keeps_it,
            process::a_takeover_handling_inputs_for_longer_than_its_lease_keeps_it,
            subscription::a_filter_on_a_category_no_stream_can_be_in_is_refused,
            subscription::a_stream_named_as_a_category_is_in_it,
            subscription::a_category_that_ends_in_a_space_can_be_filtered,
            subscription::every_category_a_stream_can_be_in_can_be_read,
            subscription::a_filter_on_an_event_type_no_event_can_have_is_refused,
            subscription::a_page_after_the_highest_positions_never_goes_back,
            subscription::a_page_of_no_events_looks_at_nothing
        );
    };
    (@tests $make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                conformance::$module::$name($make.await).await;
            }
        )*
    };
}
