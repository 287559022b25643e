// @generated automatically by Diesel CLI.

diesel::table! {
    idempotency_keys (workspace_id, subject, key) {
        workspace_id -> Int8,
        subject -> Text,
        key -> Text,
        request_hash -> Text,
        response_status -> Int2,
        response_type -> Text,
        response_location -> Nullable<Text>,
        response_body -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    operation_run_events (id) {
        id -> Int8,
        run_id -> Int8,
        workspace_id -> Int8,
        at -> Timestamptz,
        actor -> Text,
        kind -> Text,
        from_status -> Nullable<Text>,
        to_status -> Text,
        outcome -> Text,
        detail -> Jsonb,
    }
}

diesel::table! {
    operation_runs (id) {
        id -> Int8,
        workspace_id -> Int8,
        tenant_id -> Nullable<Int8>,
        user_id -> Nullable<Int8>,
        initiator_name -> Text,
        #[sql_name = "type"]
        type_ -> Text,
        status -> Text,
        outcome -> Text,
        run_identity_hash -> Text,
        identity_policy -> Text,
        summary_counts -> Jsonb,
        failure_summary -> Jsonb,
        context -> Jsonb,
        started_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        backup_schedule_id -> Nullable<Int8>,
        revision -> Int8,
    }
}

diesel::joinable!(operation_run_events -> operation_runs (run_id));

diesel::allow_tables_to_appear_in_same_query!(idempotency_keys, operation_run_events, operation_runs,);
