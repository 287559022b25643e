//! The kinds of row `opsrun adopt --check` tells apart: their stable names, whether a
//! person must decide, and what adopt does with each.

/// A kind of row that breaks one of opsrun's rules, or that adopt changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Finding {
    DottedType,
    UnknownType,
    UnknownStatusOrOutcome,
    StatusOutcomeMismatch,
    CompletedWithoutCompletedAt,
    ActiveWithCompletedAt,
    JsonNull,
    PlatformFailures,
    PlatformCounts,
    JsonNotObject,
    ScopeMismatch,
    MalformedHash,
    HashDiffers,
    IdentityNotComputable,
    ActiveDuplicate,
    StrictOnceRepeat,
}

impl Finding {
    pub const ALL: [Finding; 16] = [
        Finding::DottedType,
        Finding::UnknownType,
        Finding::UnknownStatusOrOutcome,
        Finding::StatusOutcomeMismatch,
        Finding::CompletedWithoutCompletedAt,
        Finding::ActiveWithCompletedAt,
        Finding::JsonNull,
        Finding::PlatformFailures,
        Finding::PlatformCounts,
        Finding::JsonNotObject,
        Finding::ScopeMismatch,
        Finding::MalformedHash,
        Finding::HashDiffers,
        Finding::IdentityNotComputable,
        Finding::ActiveDuplicate,
        Finding::StrictOnceRepeat,
    ];

    /// The stable name `--check` prints.
    pub fn name(self) -> &'static str {
        match self {
            Finding::DottedType => "dotted_type",
            Finding::UnknownType => "unknown_type",
            Finding::UnknownStatusOrOutcome => "unknown_status_or_outcome",
            Finding::StatusOutcomeMismatch => "status_outcome_mismatch",
            Finding::CompletedWithoutCompletedAt => "completed_without_completed_at",
            Finding::ActiveWithCompletedAt => "active_with_completed_at",
            Finding::JsonNull => "json_null",
            Finding::PlatformFailures => "platform_failures",
            Finding::PlatformCounts => "platform_counts",
            Finding::JsonNotObject => "json_not_object",
            Finding::ScopeMismatch => "scope_mismatch",
            Finding::MalformedHash => "malformed_identity_hash",
            Finding::HashDiffers => "identity_hash_differs",
            Finding::IdentityNotComputable => "identity_not_computable",
            Finding::ActiveDuplicate => "active_duplicate_identity",
            Finding::StrictOnceRepeat => "strict_once_repeat",
        }
    }

    /// Whether a person must decide (adopt refuses while such rows exist).
    pub fn needs_decision(self, keep_duplicates_apart: bool) -> bool {
        match self {
            Finding::UnknownType
            | Finding::UnknownStatusOrOutcome
            | Finding::StatusOutcomeMismatch
            | Finding::ActiveWithCompletedAt
            | Finding::JsonNotObject
            | Finding::ScopeMismatch
            | Finding::IdentityNotComputable => true,
            Finding::ActiveDuplicate => !keep_duplicates_apart,
            Finding::DottedType
            | Finding::CompletedWithoutCompletedAt
            | Finding::JsonNull
            | Finding::PlatformFailures
            | Finding::PlatformCounts
            | Finding::MalformedHash
            | Finding::HashDiffers
            | Finding::StrictOnceRepeat => false,
        }
    }

    /// What adopt does with such rows.
    pub fn action(self, keep_duplicates_apart: bool) -> &'static str {
        match self {
            Finding::DottedType => "renames it to the canonical type (a backup-schedule spelling's trigger goes to context.trigger, the old name to context.adopted.platform_type)",
            Finding::UnknownType => "refuses: not in the catalog; fix the type or remove the row",
            Finding::UnknownStatusOrOutcome => "refuses: status must be queued|running|completed, outcome pending|succeeded|partially_succeeded|failed|blocked|cancelled",
            Finding::StatusOutcomeMismatch => "refuses: a completed run needs a final outcome, an active one `pending`",
            Finding::CompletedWithoutCompletedAt => "sets completed_at to updated_at, its last change",
            Finding::ActiveWithCompletedAt => "refuses: an active run with completed_at; decide whether it finished",
            Finding::JsonNull => "replaces the null or empty list with opsrun's empty default",
            Finding::PlatformFailures => "stores the failures as {items (at most 100, sanitized), dropped}; a reason outside the taxonomy becomes unknown, kept as platform_reason_code",
            Finding::PlatformCounts => "converts counters written as digits; other keys and values go to context.adopted.summary_counts",
            Finding::JsonNotObject => "refuses: summary_counts and context must be objects (or empty), failure_summary a list or object of failures",
            Finding::ScopeMismatch => "refuses: a tenant type needs tenant_id, a workspace type must not have one",
            Finding::MalformedHash => "recomputes the identity under opsrun's rules (the old value goes to context.adopted)",
            Finding::HashDiffers => "recomputes the identity under opsrun's rules (the old value goes to context.adopted)",
            Finding::IdentityNotComputable => "refuses: an active or strict-once run whose context lacks its identity inputs",
            Finding::ActiveDuplicate if keep_duplicates_apart => "the newest keeps the identity; the others get one of their own",
            Finding::ActiveDuplicate => "refuses: rerun with --keep-duplicates-apart (the newest keeps the identity) or complete all but one",
            Finding::StrictOnceRepeat => "the oldest keeps the strict-once identity; later ones get one of their own",
        }
    }
}
