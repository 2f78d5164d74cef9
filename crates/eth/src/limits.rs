//! Input bounds applied before anything is allocated or parsed.

/// Bounds on transaction contents. Decoders check them before they allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `data` (calldata or init code) accepted, in bytes.
    pub max_data_len: usize,
    /// Largest number of entries in an access list.
    pub max_access_list_items: usize,
    /// Largest number of storage keys over all access-list entries together.
    pub max_storage_keys: usize,
    /// Largest number of tuples in an EIP-7702 authorization list.
    pub max_authorizations: usize,
}

impl Limits {
    /// 128 KiB of data, 64 access-list entries, 1024 storage keys in all, 64 authorizations.
    pub const DEFAULT: Limits = Limits {
        max_data_len: 128 * 1024,
        max_access_list_items: 64,
        max_storage_keys: 1024,
        max_authorizations: 64,
    };

    /// Largest encoded transaction these limits admit: data, access list and a generous fixed
    /// allowance for the scalar fields and RLP headers. Used to refuse oversized input early.
    pub fn max_encoded_len(&self) -> usize {
        const FIXED_FIELDS: usize = 1024;
        const ITEM_OVERHEAD: usize = 32;
        // [chain_id, address, nonce, y_parity, r, s] with headers: at most 3 + 9 + 21 + 9 + 1 + 33 + 33.
        const AUTHORIZATION_LEN: usize = 112;
        self.max_data_len
            + FIXED_FIELDS
            + self.max_access_list_items * (20 + ITEM_OVERHEAD)
            + self.max_storage_keys * 33
            + self.max_authorizations * AUTHORIZATION_LEN
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
