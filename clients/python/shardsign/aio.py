"""The asyncio signer (grpc.aio), same API as `ShardsignSigner` with `await`."""

import asyncio
import time

import grpc

from . import _common
from .errors import ShardsignError, from_rpc_error
from .v1 import shardsign_pb2 as pb
from .v1 import shardsign_pb2_grpc as rpc


class AsyncShardsignSigner:
    def __init__(self, endpoint, api_key=None, key_id=None, ca_cert=None, timeout=30.0, tls_name=None, retries=4):
        if not key_id:
            raise _common.ConfigurationError("key_id: the signing key to use is required")
        self._api_key = _common.ApiKey(api_key)
        self.endpoints = _common.targets_of(endpoint)
        self.endpoint = ",".join(self.endpoints)
        self._current = 0
        self.key_id = key_id
        self.timeout = timeout
        self.retries = retries
        self.key_expires_in = None
        options = [("grpc.ssl_target_name_override", tls_name)] if tls_name else []
        credentials = grpc.ssl_channel_credentials(root_certificates=_common.read_ca(ca_cert))
        self._channels = [grpc.aio.secure_channel(target, credentials, options=options) for target in self.endpoints]
        self._stubs = [rpc.SignerStub(channel) for channel in self._channels]
        self._address = None

    def __repr__(self):
        return f"AsyncShardsignSigner(endpoint={self.endpoint!r}, key_id={self.key_id!r}, api_key={self._api_key!r})"

    async def close(self):
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _call(self, name, request):
        """See ShardsignSigner._call."""
        deadline = time.monotonic() + self.timeout
        backoff = 0.1
        attempt = 0
        several = len(self._stubs) > 1
        while True:
            attempt += 1
            left = max(deadline - time.monotonic(), 0.001)
            current = self._current
            method = getattr(self._stubs[current], name)
            call = method(request, timeout=left, metadata=[self._api_key.header()])
            try:
                reply = await call
                self.key_expires_in = _common.expires_in(await call.initial_metadata())
                return reply
            except grpc.RpcError as error:
                seconds = _common.expires_in(await call.trailing_metadata())
                if seconds is not None:
                    self.key_expires_in = seconds
                mapped = from_rpc_error(error)
                retry = (
                    _common.should_retry(error, several)
                    and attempt <= self.retries
                    and time.monotonic() + backoff < deadline
                )
                if not retry:
                    raise mapped from None
                if several and self._current == current:
                    self._current = (current + 1) % len(self._stubs)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def address(self):
        """The key's EIP-55 address (a coroutine here)."""
        if self._address is None:
            reply = await self._call("GetKey", pb.GetKeyRequest(key_id=self.key_id))
            self._address = reply.address
        return self._address

    async def sign_transaction(self, transaction_dict, request_id=None):
        """See ShardsignSigner.sign_transaction."""
        request = _common.sign_request(self.key_id, transaction_dict, request_id)
        signed = _common.SignedTransaction.from_reply(await self._call("SignTransaction", request))
        if self._address is not None and signed.sender != self._address:
            raise ShardsignError("the signed transaction does not recover to this key's address")
        return signed

    async def sign_typed_data(
        self, domain_data=None, message_types=None, message_data=None, full_message=None
    ):
        """EIP-712 typed data, with eth-account's `sign_typed_data` arguments: the whole document
        (`full_message`) or its three parts. The coordinator and the nodes parse it and compute
        the hash themselves; the key's policy must allow its domain and primary type."""
        request = pb.SignTypedDataRequest(
            key_id=self.key_id,
            request_id=_common.request_id(),
            typed_data=_common.typed_data_json(domain_data, message_types, message_data, full_message),
        )
        reply = await self._call("SignTypedData", request)
        return _common.SignedMessage.from_parts(reply.signature, reply.hash)

    async def sign_authorization(self, authorization_dict):
        """EIP-7702 authorization ({"chainId", "address", "nonce"}, as eth-account's
        `sign_authorization`): the key's account lets the delegate contract's code run as its
        own. The key's policy must list the delegate; chain id 0 (every chain) needs
        allow_any_chain_authorization."""
        request = _common.authorization_request(self.key_id, authorization_dict)
        return _common.SignedAuthorization.from_reply(await self._call("SignAuthorization", request))

    async def check_transaction(self, transaction_dict):
        """Dry run of `sign_transaction`: would the service sign it now? A `PolicyCheck`
        (allowed, the deciding rule, the coordinator's 24 h budgets); nothing is signed or
        counted."""
        request = _common.check_request(transaction=_common.sign_request(self.key_id, transaction_dict))
        return _common.PolicyCheck.from_reply(await self._call("CheckPolicy", request))

    async def check_message(self, signable_message):
        """Dry run of `sign_message`; a `PolicyCheck`."""
        message = pb.SignMessageRequest(key_id=self.key_id, message=_common.message_bytes(signable_message))
        request = _common.check_request(message=message)
        return _common.PolicyCheck.from_reply(await self._call("CheckPolicy", request))

    async def check_authorization(self, authorization_dict):
        """Dry run of `sign_authorization`; a `PolicyCheck`."""
        authorization = _common.authorization_request(self.key_id, authorization_dict)
        request = _common.check_request(authorization=authorization)
        return _common.PolicyCheck.from_reply(await self._call("CheckPolicy", request))

    async def check_typed_data(
        self, domain_data=None, message_types=None, message_data=None, full_message=None
    ):
        """Dry run of `sign_typed_data` (same arguments); a `PolicyCheck`."""
        typed = pb.SignTypedDataRequest(
            key_id=self.key_id,
            typed_data=_common.typed_data_json(domain_data, message_types, message_data, full_message),
        )
        request = _common.check_request(typed_data=typed)
        return _common.PolicyCheck.from_reply(await self._call("CheckPolicy", request))

    async def sign_message(self, signable_message):
        request = pb.SignMessageRequest(
            key_id=self.key_id,
            request_id=_common.request_id(),
            message=_common.message_bytes(signable_message),
        )
        return _common.SignedMessage.from_reply(await self._call("SignMessage", request))
