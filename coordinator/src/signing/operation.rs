//! The signing operations of the public API, each described once for the one pipeline
//! (`signing::Signing::sign`): how its request becomes a [`Payload`] and how a signature over
//! that payload becomes its response.

use shardsign_eth::{Limits, Signature, personal_signature_bytes};
use shardsign_proto::v1 as api;
use shardsign_request::{Payload, proto};

use crate::error::CoordError;
use crate::registry::KeyRecord;

/// One signing RPC.
pub trait Operation: Send {
    type Response: prost::Message + Default + Send;
    /// Its name in the audit log and the metrics.
    const NAME: &'static str;

    fn key_id(&self) -> &str;
    fn request_id(&self) -> &str;
    /// The validated payload (errors name the request field).
    fn into_payload(self, limits: &Limits) -> Result<Payload, CoordError>;
    /// The response for a verified signature over `payload`, checked against the key.
    fn respond(
        payload: Payload,
        signature: Signature,
        key: &KeyRecord,
    ) -> Result<Self::Response, CoordError>;
    /// What the audit row names as the signed item (a tx hash, a message hash).
    fn evidence(response: &Self::Response) -> Vec<u8>;
}

impl Operation for api::SignTransactionRequest {
    type Response = api::SignTransactionResponse;
    const NAME: &'static str = "sign_transaction";

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn into_payload(self, limits: &Limits) -> Result<Payload, CoordError> {
        Ok(proto::transaction(self.transaction.as_ref(), limits)?)
    }

    fn respond(
        payload: Payload,
        signature: Signature,
        key: &KeyRecord,
    ) -> Result<Self::Response, CoordError> {
        let Payload::Transaction(tx) = payload else {
            return Err(CoordError::SigningFailed(
                "a transaction request carried another payload".into(),
            ));
        };
        let signed = tx.into_signed(signature);
        let sender = signed
            .recover_sender()
            .map_err(|e| CoordError::SigningFailed(e.to_string()))?;
        if sender.to_checksum() != key.address {
            return Err(CoordError::SigningFailed(
                "the signed transaction does not recover to the key's address".into(),
            ));
        }
        let v = u64::try_from(signed.v())
            .map_err(|_| CoordError::invalid("chain_id", "too large for a 64-bit v"))?;
        Ok(api::SignTransactionResponse {
            raw_transaction: signed.raw().to_vec(),
            tx_hash: signed.hash().to_vec(),
            r: signature.r().to_vec(),
            s: signature.s().to_vec(),
            v,
            y_parity: u32::from(signed.signature().recovery_id().to_u8()),
            sender: sender.to_checksum(),
        })
    }

    fn evidence(response: &Self::Response) -> Vec<u8> {
        response.tx_hash.clone()
    }
}

impl Operation for api::SignTypedDataRequest {
    type Response = api::SignTypedDataResponse;
    const NAME: &'static str = "sign_typed_data";

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn into_payload(self, _limits: &Limits) -> Result<Payload, CoordError> {
        Ok(proto::typed_data(self.typed_data.into_bytes())?)
    }

    fn respond(
        payload: Payload,
        signature: Signature,
        key: &KeyRecord,
    ) -> Result<Self::Response, CoordError> {
        let Payload::TypedData(typed) = &payload else {
            return Err(CoordError::SigningFailed(
                "a typed-data request signed another payload".into(),
            ));
        };
        Ok(api::SignTypedDataResponse {
            signature: personal_signature_bytes(&signature).to_vec(),
            hash: payload.signing_hash().to_vec(),
            signer: key.address.clone(),
            primary_type: typed.typed.primary_type.clone(),
        })
    }

    fn evidence(response: &Self::Response) -> Vec<u8> {
        response.hash.clone()
    }
}

impl Operation for api::SignAuthorizationRequest {
    type Response = api::SignAuthorizationResponse;
    const NAME: &'static str = "sign_authorization";

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn into_payload(self, _limits: &Limits) -> Result<Payload, CoordError> {
        Ok(proto::authorization(&self)?)
    }

    fn respond(
        payload: Payload,
        signature: Signature,
        key: &KeyRecord,
    ) -> Result<Self::Response, CoordError> {
        let Payload::Authorization(authorization) = &payload else {
            return Err(CoordError::SigningFailed(
                "an authorization request signed another payload".into(),
            ));
        };
        // EIP-7702 refuses a high s (EIP-2), as for transactions.
        let signature = signature.normalized_low_s();
        Ok(api::SignAuthorizationResponse {
            chain_id: authorization.chain_id,
            address: authorization.address.to_checksum(),
            nonce: authorization.nonce,
            y_parity: u32::from(signature.recovery_id().to_u8()),
            r: signature.r().to_vec(),
            s: signature.s().to_vec(),
            hash: payload.signing_hash().to_vec(),
            signer: key.address.clone(),
        })
    }

    fn evidence(response: &Self::Response) -> Vec<u8> {
        response.hash.clone()
    }
}

impl Operation for api::SignMessageRequest {
    type Response = api::SignMessageResponse;
    const NAME: &'static str = "sign_message";

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn into_payload(self, _limits: &Limits) -> Result<Payload, CoordError> {
        Ok(proto::personal_message(self.message)?)
    }

    fn respond(
        payload: Payload,
        signature: Signature,
        key: &KeyRecord,
    ) -> Result<Self::Response, CoordError> {
        Ok(api::SignMessageResponse {
            signature: personal_signature_bytes(&signature).to_vec(),
            message_hash: payload.signing_hash().to_vec(),
            signer: key.address.clone(),
        })
    }

    fn evidence(response: &Self::Response) -> Vec<u8> {
        response.message_hash.clone()
    }
}
