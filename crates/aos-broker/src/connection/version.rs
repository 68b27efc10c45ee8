//! Which MQTT version a connection speaks, read from the beginning of its CONNECT without
//! taking anything from the read buffer (the version's own codec then reads the whole packet).

use ntex::codec::Decoder;
use ntex::util::BytesMut;
use ntex_mqtt::error::DecodeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    V3,
    V5,
}

/// Decodes the protocol level of a CONNECT (MQTT 3.1.1 §3.1.2.2, 5.0 §3.1.2.2).
pub(crate) struct VersionCodec;

impl Decoder for VersionCodec {
    type Item = Version;
    type Error = DecodeError;

    fn decode(&self, src: &mut BytesMut) -> Result<Option<Version>, DecodeError> {
        const CONNECT: u8 = 0x10;
        let Some(&first) = src.first() else {
            return Ok(None);
        };
        if first != CONNECT {
            return Err(DecodeError::UnsupportedPacketType);
        }
        // The remaining length: 1 to 4 bytes, 7 bits each, the high bit saying more follow.
        let mut header = 1;
        loop {
            let Some(&byte) = src.get(header) else {
                return Ok(None);
            };
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if header > 4 {
                return Err(DecodeError::InvalidLength);
            }
        }
        // Protocol name (length 4, "MQTT"), then the protocol level.
        let Some(start) = src.get(header..header + 7) else {
            return Ok(None);
        };
        if &start[..6] != b"\x00\x04MQTT" {
            return Err(DecodeError::InvalidProtocol);
        }
        match start[6] {
            4 => Ok(Some(Version::V3)),
            5 => Ok(Some(Version::V5)),
            _ => Err(DecodeError::InvalidProtocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<Version>, DecodeError> {
        VersionCodec.decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn the_level_tells_the_version_and_nothing_is_taken() {
        let mut buf = BytesMut::from(&b"\x10\x98\x02\0\x04MQTT\x04\xc0\0\x0f\0\x02d1"[..]);
        assert_eq!(VersionCodec.decode(&mut buf), Ok(Some(Version::V3)));
        assert_eq!(buf.len(), 17);
        assert_eq!(decode(b"\x10\x98\x02\0\x04MQTT\x05"), Ok(Some(Version::V5)));
    }

    #[test]
    fn a_partial_header_waits_for_more() {
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(b"\x10\x98"), Ok(None));
        assert_eq!(decode(b"\x10\x98\x02\0\x04MQTT"), Ok(None));
    }

    #[test]
    fn anything_but_an_mqtt_connect_is_refused() {
        assert_eq!(decode(b"\x30\x02"), Err(DecodeError::UnsupportedPacketType));
        assert_eq!(
            decode(b"\x10\x7f\x7f\x00\x04MQTT\x06"),
            Err(DecodeError::InvalidProtocol)
        );
        assert_eq!(
            decode(b"\x10\x0c\x00\x06MQIsdp\x03"),
            Err(DecodeError::InvalidProtocol)
        );
        assert_eq!(
            decode(b"\x10\xff\xff\xff\xff\x01"),
            Err(DecodeError::InvalidLength)
        );
    }
}
