//! The protobuf codec of every gRPC service and client certd generates:
//! prost's, except that a message that cannot be decoded is the caller's
//! fault and says so.
//!
//! tonic's prost codec answers a malformed message with `INTERNAL`, which
//! tells a client that certd broke. A request that is not valid protobuf is
//! `INVALID_ARGUMENT`, as every other malformed input is (`api::code_of`).
//! The same codec decodes the answers certd's own clients read; a malformed
//! answer there is reported as the same kind of error, naming the message.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost's encoding, with decode failures classified as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub(crate) struct ProtoCodec<T, U> {
    types: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec { types: PhantomData }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder {
            inner: ProstDecoder::default(),
        }
    }
}

/// Decodes `U`, mapping a malformed message to `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub(crate) struct ProtoDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "malformed {} message: {}",
                short_type_name::<U>(),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// `IssueRequest` rather than `certd::api::proto::IssueRequest`.
fn short_type_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_named_without_their_module_path() {
        assert_eq!(
            super::short_type_name::<crate::api::proto::IssueRequest>(),
            "IssueRequest"
        );
    }
}
