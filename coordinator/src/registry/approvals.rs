//! Parked requests waiting for human approval: one row per approval id (the request hash), with
//! what would be signed (for approvers to review), the statement they sign, the signatures
//! gathered so far and the outcome. Every decision is a read-modify-write under the registry's
//! one write connection, so two approvers deciding at once cannot lose a signature, and a
//! decided row never changes again.

use prost::Message as _;
use shardsign_proto::v1 as api;

use super::Registry;
use super::db::{Row, Sql, args};
use crate::error::CoordError;

/// Where a parked request stands. Everything but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Result<Self, CoordError> {
        match text {
            "pending" => Ok(ApprovalState::Pending),
            "approved" => Ok(ApprovalState::Approved),
            "rejected" => Ok(ApprovalState::Rejected),
            "expired" => Ok(ApprovalState::Expired),
            other => Err(CoordError::config(
                "registry",
                format!("unknown approval state `{other}`"),
            )),
        }
    }
}

/// One parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub approval_id: String,
    pub state: ApprovalState,
    pub key_id: String,
    pub request_id: String,
    pub api_key_id: String,
    pub chain_id: u64,
    pub rule: String,
    pub detail: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub payload_kind: String,
    pub payload: Vec<u8>,
    /// The encoded APPROVE statement every approver signs.
    pub statement: Vec<u8>,
    pub signatures: Vec<api::StatementSignature>,
    pub approvers: Vec<String>,
    pub quorum: u32,
    pub decided_at: i64,
    pub rejected_by: String,
    pub reason: String,
}

impl ApprovalRow {
    /// The gathered approval as the nodes are given it.
    pub fn signed_statement(&self) -> Vec<u8> {
        api::SignedStatement {
            statement: self.statement.clone(),
            signatures: self.signatures.clone(),
        }
        .encode_to_vec()
    }

    pub fn to_api(&self) -> api::ApprovalRecord {
        api::ApprovalRecord {
            approval_id: self.approval_id.clone(),
            state: self.state.as_str().into(),
            key_id: self.key_id.clone(),
            request_id: self.request_id.clone(),
            api_key_id: self.api_key_id.clone(),
            chain_id: self.chain_id,
            rule: self.rule.clone(),
            detail: self.detail.clone(),
            created_at_unix: self.created_at,
            expires_at_unix: self.expires_at,
            payload_kind: self.payload_kind.clone(),
            payload: self.payload.clone(),
            statement: self.statement.clone(),
            signatures: self.signatures.clone(),
            approvers: self.approvers.clone(),
            quorum: self.quorum,
            decided_at_unix: self.decided_at,
            rejected_by: self.rejected_by.clone(),
            reason: self.reason.clone(),
        }
    }
}

const COLUMNS: &str = "approval_id, state, key_id, request_id, api_key_id, chain_id, rule, detail, created_at, expires_at, payload_kind, payload, statement, signatures, approvers, quorum, decided_at, rejected_by, reason";

fn unreadable(what: &str) -> CoordError {
    CoordError::config("registry", format!("an approval's {what} is unreadable"))
}

fn row_to_approval(row: &Row) -> Result<ApprovalRow, CoordError> {
    Ok(ApprovalRow {
        approval_id: row.text(0)?,
        state: ApprovalState::parse(&row.text(1)?)?,
        key_id: row.text(2)?,
        request_id: row.text(3)?,
        api_key_id: row.text(4)?,
        chain_id: row.int(5)? as u64,
        rule: row.text(6)?,
        detail: row.text(7)?,
        created_at: row.int(8)?,
        expires_at: row.int(9)?,
        payload_kind: row.text(10)?,
        payload: row.blob(11)?,
        statement: row.blob(12)?,
        signatures: api::SignedStatement::decode(row.blob(13)?.as_slice())
            .map_err(|_| unreadable("signatures"))?
            .signatures,
        approvers: serde_json::from_str(&row.text(14)?).map_err(|_| unreadable("approvers"))?,
        quorum: row.int(15)? as u32,
        decided_at: row.int(16)?,
        rejected_by: row.text(17)?,
        reason: row.text(18)?,
    })
}

fn encoded_signatures(signatures: &[api::StatementSignature]) -> Vec<u8> {
    api::SignedStatement {
        statement: Vec::new(),
        signatures: signatures.to_vec(),
    }
    .encode_to_vec()
}

fn select(
    sql: &mut dyn Sql,
    approval_id: &str,
    lock: bool,
) -> Result<Option<ApprovalRow>, CoordError> {
    let lock = if lock { sql.for_update() } else { "" };
    sql.query_opt(
        &format!("SELECT {COLUMNS} FROM approvals WHERE approval_id = ?1{lock}"),
        args![approval_id],
    )?
    .map(|row| row_to_approval(&row))
    .transpose()
}

impl Registry {
    /// Stores `row` as a new parked request, unless one with its id exists; returns the stored
    /// row and whether it is new.
    pub fn park_approval(&self, row: &ApprovalRow) -> Result<(ApprovalRow, bool), CoordError> {
        self.write(|sql| {
            let inserted = sql.execute(
                &format!(
                    "INSERT INTO approvals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
                     ON CONFLICT DO NOTHING"
                ),
                args![
                    &row.approval_id,
                    row.state.as_str(),
                    &row.key_id,
                    &row.request_id,
                    &row.api_key_id,
                    row.chain_id as i64,
                    &row.rule,
                    &row.detail,
                    row.created_at,
                    row.expires_at,
                    &row.payload_kind,
                    &row.payload,
                    &row.statement,
                    encoded_signatures(&row.signatures),
                    serde_json::to_string(&row.approvers).expect("strings serialise"),
                    i64::from(row.quorum),
                    row.decided_at,
                    &row.rejected_by,
                    &row.reason,
                ],
            )?;
            let stored = select(sql, &row.approval_id, false)?
                .ok_or_else(|| CoordError::config("registry", "a parked request vanished"))?;
            Ok((stored, inserted == 1))
        })
    }

    pub fn get_approval(&self, approval_id: &str) -> Result<Option<ApprovalRow>, CoordError> {
        self.read(|sql| select(sql, approval_id, false))
    }

    /// Parked requests, newest first: pending ones (or all), of one key (or every key).
    pub fn list_approvals(
        &self,
        include_decided: bool,
        key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>, CoordError> {
        self.read(|sql| {
            sql.query(
                &format!(
                    "SELECT {COLUMNS} FROM approvals
                     WHERE (?1 = 1 OR state = 'pending') AND (?2 = '' OR key_id = ?2)
                     ORDER BY created_at DESC, approval_id LIMIT ?3"
                ),
                args![
                    i64::from(include_decided),
                    key_id.unwrap_or(""),
                    i64::from(limit)
                ],
            )?
            .iter()
            .map(row_to_approval)
            .collect()
        })
    }

    /// Applies `decide` to a pending row under the write lock and stores what it returns (state,
    /// signatures, decision fields). A row that is no longer pending is returned unchanged and
    /// `decide` is not called: a decided request never changes again.
    pub fn decide_approval(
        &self,
        approval_id: &str,
        decide: impl FnOnce(ApprovalRow) -> Result<ApprovalRow, CoordError> + Send,
    ) -> Result<ApprovalRow, CoordError> {
        self.write(|sql| {
            let current = select(sql, approval_id, true)?
                .ok_or_else(|| CoordError::ApprovalNotFound(approval_id.to_string()))?;
            if current.state != ApprovalState::Pending {
                return Ok(current);
            }
            let decided = decide(current)?;
            sql.execute(
                "UPDATE approvals SET state = ?2, signatures = ?3, decided_at = ?4, rejected_by = ?5, reason = ?6
                 WHERE approval_id = ?1 AND state = 'pending'",
                args![
                    approval_id,
                    decided.state.as_str(),
                    encoded_signatures(&decided.signatures),
                    decided.decided_at,
                    &decided.rejected_by,
                    &decided.reason,
                ],
            )?;
            Ok(decided)
        })
    }

    /// Marks every pending request past its expiry as expired; returns them.
    pub fn expire_approvals(&self, now_unix: i64) -> Result<Vec<ApprovalRow>, CoordError> {
        let expired = self.write(|sql| {
            // RETURNING gives exactly the rows this call expired (another coordinator's sweep
            // running at once expires the rest, and audits those).
            sql.query(
                &format!(
                    "UPDATE approvals SET state = 'expired', decided_at = ?1
                     WHERE state = 'pending' AND expires_at <= ?1 RETURNING {COLUMNS}"
                ),
                args![now_unix],
            )?
            .iter()
            .map(row_to_approval)
            .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(expired)
    }

    /// Deletes decided requests decided before `before_unix` (the audit log keeps their story);
    /// returns how many.
    pub fn prune_approvals(&self, before_unix: i64) -> Result<usize, CoordError> {
        Ok(self.write(|sql| {
            sql.execute(
                "DELETE FROM approvals WHERE state != 'pending' AND decided_at < ?1",
                args![before_unix],
            )
        })? as usize)
    }

    /// How many requests wait for approval.
    pub fn pending_approvals(&self) -> Result<u64, CoordError> {
        let row = self.read(|sql| {
            sql.query_opt(
                "SELECT COUNT(*) FROM approvals WHERE state = 'pending'",
                &[],
            )
        })?;
        Ok(row.map(|row| row.int(0)).transpose()?.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, created_at: i64) -> ApprovalRow {
        ApprovalRow {
            approval_id: id.into(),
            state: ApprovalState::Pending,
            key_id: "k".into(),
            request_id: "r".into(),
            api_key_id: "ak".into(),
            chain_id: 1,
            rule: "require_approval_above".into(),
            detail: "2 ETH > 1 ETH".into(),
            created_at,
            expires_at: created_at + 100,
            payload_kind: "tx".into(),
            payload: vec![1, 2],
            statement: vec![3],
            signatures: Vec::new(),
            approvers: vec!["aa".into()],
            quorum: 1,
            decided_at: 0,
            rejected_by: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_parked_request_is_stored_once_and_a_decision_is_final() {
        for registry in crate::registry::testing::each_backend() {
            a_parked_request_is_stored_once_and_a_decision_is_final_on(&registry);
        }
    }

    fn a_parked_request_is_stored_once_and_a_decision_is_final_on(registry: &Registry) {
        let (stored, new) = registry.park_approval(&row("a1", 1000)).unwrap();
        assert!(new);
        assert_eq!(stored, row("a1", 1000));
        let (again, new) = registry.park_approval(&row("a1", 2000)).unwrap();
        assert!(!new, "the first parking stands");
        assert_eq!(again.created_at, 1000);
        let signature = api::StatementSignature {
            public_key: vec![1; 32],
            signature: vec![2; 64],
        };
        let approved = registry
            .decide_approval("a1", |mut row| {
                row.state = ApprovalState::Approved;
                row.signatures.push(signature.clone());
                row.decided_at = 1500;
                Ok(row)
            })
            .unwrap();
        assert_eq!(approved.state, ApprovalState::Approved);
        let read = registry.get_approval("a1").unwrap().unwrap();
        assert_eq!(read.signatures, vec![signature]);
        // Decided: the closure is not even called.
        let unchanged = registry
            .decide_approval("a1", |_| panic!("a decided request is final"))
            .unwrap();
        assert_eq!(unchanged.state, ApprovalState::Approved);
        assert!(matches!(
            registry.decide_approval("nope", Ok),
            Err(CoordError::ApprovalNotFound(_))
        ));
    }

    #[test]
    fn pending_requests_expire_and_listing_filters() {
        for registry in crate::registry::testing::each_backend() {
            pending_requests_expire_and_listing_filters_on(&registry);
        }
    }

    fn pending_requests_expire_and_listing_filters_on(registry: &Registry) {
        registry.park_approval(&row("old", 1000)).unwrap();
        registry.park_approval(&row("new", 5000)).unwrap();
        assert_eq!(registry.pending_approvals().unwrap(), 2);
        let expired = registry.expire_approvals(1100).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].approval_id, "old");
        assert_eq!(registry.pending_approvals().unwrap(), 1);
        let pending = registry.list_approvals(false, None, 100).unwrap();
        assert_eq!(pending.len(), 1);
        let all = registry.list_approvals(true, Some("k"), 100).unwrap();
        assert_eq!(
            all.iter()
                .map(|r| r.approval_id.as_str())
                .collect::<Vec<_>>(),
            ["new", "old"]
        );
        assert!(
            registry
                .list_approvals(true, Some("other"), 100)
                .unwrap()
                .is_empty()
        );
        // Decided rows go after the retention; pending ones never do.
        assert_eq!(registry.prune_approvals(1100).unwrap(), 0);
        assert_eq!(registry.prune_approvals(1101).unwrap(), 1);
        assert_eq!(registry.list_approvals(true, None, 100).unwrap().len(), 1);
        assert_eq!(registry.prune_approvals(i64::MAX).unwrap(), 0);
    }
}
