//! The BFD Control packet (RFC 5880 §4.1): codec and the packet-level reception checks of
//! §6.8.6. Decoding never panics: every malformed input is a typed [`DecodeError`], and the
//! caller discards the packet (BFD has no error message to send back).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! An optional Authentication Section follows when A is set:
//! |   Auth Type   |   Auth Len    |    Authentication Data...     |
//! ```
//!
//! Intervals are in microseconds on the wire and here.

/// Length of a Control packet without an Authentication Section.
pub const CONTROL_LEN: usize = 24;
/// The only version (RFC 5880 §4.1).
pub const VERSION: u8 = 1;

/// Session states (RFC 5880 §4.1 "State (Sta)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Diagnostic codes (RFC 5880 §4.1 "Diagnostic (Diag)"); unknown values are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9..=31, reserved.
    Other(u8),
}

impl Diag {
    pub fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            c => Diag::Other(c),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(c) => c & 0x1f,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Other(_) => "reserved diagnostic",
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Authentication Section, kept opaque: edgelb does not authenticate (a session that
/// receives one discards the packet, §6.8.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub auth_type: u8,
    pub data: Vec<u8>,
}

/// A BFD Control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub fin: bool,
    /// Control Plane Independent (C).
    pub cpi: bool,
    /// Demand (D).
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds.
    pub required_min_rx: u32,
    /// Microseconds; 0 means "I do not take Echo packets".
    pub required_min_echo_rx: u32,
    pub auth: Option<Auth>,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6, the checks that need no session).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("BFD packet of {len} octets is shorter than the {CONTROL_LEN}-octet Control packet")]
    Truncated { len: usize },
    #[error("BFD version {0} is not 1")]
    Version(u8),
    #[error("BFD Length field {field} is invalid for a packet of {len} octets (A bit {auth})")]
    Length { field: u8, len: usize, auth: bool },
    #[error("BFD Detect Mult is zero")]
    ZeroDetectMult,
    #[error("BFD Multipoint (M) bit is set")]
    Multipoint,
    #[error("BFD My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("BFD Your Discriminator is zero in state {0} (only Down and AdminDown may send it)")]
    ZeroYourDiscriminator(State),
    #[error("BFD Auth Len {auth_len} does not fit a Length of {field}")]
    AuthLength { auth_len: u8, field: u8 },
}

const FLAG_P: u8 = 0x20;
const FLAG_F: u8 = 0x10;
const FLAG_C: u8 = 0x08;
const FLAG_A: u8 = 0x04;
const FLAG_D: u8 = 0x02;
const FLAG_M: u8 = 0x01;

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

impl ControlPacket {
    /// Decodes one UDP payload, applying the §6.8.6 checks that need no session: version,
    /// Length, Detect Mult, Multipoint, My Discriminator, Your Discriminator by state.
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, DecodeError> {
        if buf.len() < CONTROL_LEN {
            return Err(DecodeError::Truncated { len: buf.len() });
        }
        let version = buf[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = buf[1];
        let auth_present = flags & FLAG_A != 0;
        let field = buf[3];
        let min = if auth_present {
            CONTROL_LEN + 2
        } else {
            CONTROL_LEN
        };
        if usize::from(field) < min || usize::from(field) > buf.len() {
            return Err(DecodeError::Length {
                field,
                len: buf.len(),
                auth: auth_present,
            });
        }
        let detect_mult = buf[2];
        if detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags & FLAG_M != 0 {
            return Err(DecodeError::Multipoint);
        }
        let state = State::from_bits(flags >> 6);
        let my_discr = be32(buf, 4);
        if my_discr == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        let your_discr = be32(buf, 8);
        if your_discr == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(DecodeError::ZeroYourDiscriminator(state));
        }
        let auth = if auth_present {
            let auth_type = buf[CONTROL_LEN];
            let auth_len = buf[CONTROL_LEN + 1];
            let end = CONTROL_LEN + usize::from(auth_len);
            // The section is the rest of the packet (every RFC 5880 §4.2 type says so).
            if auth_len < 2 || end != usize::from(field) {
                return Err(DecodeError::AuthLength { auth_len, field });
            }
            Some(Auth {
                auth_type,
                data: buf[CONTROL_LEN + 2..end].to_vec(),
            })
        } else {
            None
        };
        Ok(ControlPacket {
            diag: Diag::from_code(buf[0]),
            state,
            poll: flags & FLAG_P != 0,
            fin: flags & FLAG_F != 0,
            cpi: flags & FLAG_C != 0,
            demand: flags & FLAG_D != 0,
            detect_mult,
            my_discr,
            your_discr,
            desired_min_tx: be32(buf, 12),
            required_min_rx: be32(buf, 16),
            required_min_echo_rx: be32(buf, 20),
            auth,
        })
    }

    /// Appends the packet to `out`. An Authentication Section longer than the Length field
    /// can say is cut to fit (only tests and the fuzzer build one).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let auth_data_max = usize::from(u8::MAX) - CONTROL_LEN - 2;
        let auth_len = self
            .auth
            .as_ref()
            .map(|a| 2 + a.data.len().min(auth_data_max));
        let len = CONTROL_LEN + auth_len.unwrap_or(0);
        out.push((VERSION << 5) | self.diag.code());
        let mut flags = (self.state as u8) << 6;
        for (set, bit) in [
            (self.poll, FLAG_P),
            (self.fin, FLAG_F),
            (self.cpi, FLAG_C),
            (self.auth.is_some(), FLAG_A),
            (self.demand, FLAG_D),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.push(flags);
        out.push(self.detect_mult);
        out.push(len as u8);
        for w in [
            self.my_discr,
            self.your_discr,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        if let (Some(a), Some(l)) = (&self.auth, auth_len) {
            out.push(a.auth_type);
            out.push(l as u8);
            out.extend_from_slice(&a.data[..l - 2]);
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CONTROL_LEN);
        self.encode(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A first packet as FRR's bfdd sends it: Down, no remote discriminator yet, 1 s slow
    /// timers, Echo receive interval 50 ms (built from RFC 5880 §4.1 by hand).
    const FRR_DOWN: [u8; 24] = [
        0x20, 0x40, 0x03, 0x18, 0x4b, 0x6f, 0x1e, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x42,
        0x40, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0xc3, 0x50,
    ];

    fn frr_down() -> ControlPacket {
        ControlPacket {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            fin: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x4b6f_1e7a,
            your_discr: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 1_000_000,
            required_min_echo_rx: 50_000,
            auth: None,
        }
    }

    #[test]
    fn down_packet_decodes_and_encodes_to_the_same_bytes() {
        assert_eq!(ControlPacket::decode(&FRR_DOWN), Ok(frr_down()));
        assert_eq!(frr_down().to_vec(), FRR_DOWN.to_vec());
    }

    #[test]
    fn up_packet_with_poll_and_diag_round_trips() {
        let p = ControlPacket {
            diag: Diag::ControlDetectionTimeExpired,
            state: State::Up,
            poll: true,
            your_discr: 7,
            ..frr_down()
        };
        let b = p.to_vec();
        assert_eq!(b[0], 0x21);
        assert_eq!(b[1], 0xe0);
        assert_eq!(ControlPacket::decode(&b), Ok(p));
    }

    fn with(mut b: [u8; 24], at: usize, v: u8) -> [u8; 24] {
        b[at] = v;
        b
    }

    #[test]
    fn each_reception_check_has_its_own_error() {
        let d = ControlPacket::decode;
        assert_eq!(d(&FRR_DOWN[..23]), Err(DecodeError::Truncated { len: 23 }));
        assert_eq!(d(&with(FRR_DOWN, 0, 0x40)), Err(DecodeError::Version(2)));
        assert_eq!(
            d(&with(FRR_DOWN, 3, 23)),
            Err(DecodeError::Length {
                field: 23,
                len: 24,
                auth: false
            })
        );
        assert!(matches!(
            d(&with(FRR_DOWN, 3, 25)),
            Err(DecodeError::Length { .. })
        ));
        assert_eq!(d(&with(FRR_DOWN, 2, 0)), Err(DecodeError::ZeroDetectMult));
        assert_eq!(d(&with(FRR_DOWN, 1, 0x41)), Err(DecodeError::Multipoint));
        let mut b = FRR_DOWN;
        b[4..8].fill(0);
        assert_eq!(d(&b), Err(DecodeError::ZeroMyDiscriminator));
        assert_eq!(
            d(&with(FRR_DOWN, 1, 0xc0)),
            Err(DecodeError::ZeroYourDiscriminator(State::Up))
        );
        // The A bit needs an Authentication Section inside Length.
        assert!(matches!(
            d(&with(FRR_DOWN, 1, 0x44)),
            Err(DecodeError::Length { auth: true, .. })
        ));
        let mut a = FRR_DOWN.to_vec();
        a[1] = 0x44;
        a[3] = 28;
        a.extend_from_slice(&[1, 9, 0, 0]);
        assert_eq!(
            d(&a),
            Err(DecodeError::AuthLength {
                auth_len: 9,
                field: 28
            })
        );
    }

    #[test]
    fn trailing_octets_beyond_length_are_ignored() {
        let mut b = FRR_DOWN.to_vec();
        b.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(ControlPacket::decode(&b), Ok(frr_down()));
    }

    #[test]
    fn authentication_section_is_kept_opaque() {
        let p = ControlPacket {
            auth: Some(Auth {
                auth_type: 1,
                data: vec![1, b'k', b'e', b'y'],
            }),
            ..frr_down()
        };
        let b = p.to_vec();
        assert_eq!(b.len(), 30);
        assert_eq!(b[3], 30);
        assert_eq!(ControlPacket::decode(&b), Ok(p));
    }

    fn arb_packet() -> impl Strategy<Value = ControlPacket> {
        let head = (0u8..32, 0u8..4, any::<[bool; 4]>(), 1u8..=255);
        let words = (
            1u32..,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        );
        let auth =
            proptest::option::of((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)));
        (head, words, auth).prop_map(|((diag, st, f, dm), (my, your, tx, rx, echo), auth)| {
            let state = State::from_bits(st);
            let your_discr = if your == 0 && matches!(state, State::Init | State::Up) {
                1
            } else {
                your
            };
            ControlPacket {
                diag: Diag::from_code(diag),
                state,
                poll: f[0],
                fin: f[1],
                cpi: f[2],
                demand: f[3],
                detect_mult: dm,
                my_discr: my,
                your_discr,
                desired_min_tx: tx,
                required_min_rx: rx,
                required_min_echo_rx: echo,
                auth: auth.map(|(auth_type, data)| Auth { auth_type, data }),
            }
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ControlPacket::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_valid_packets(
            mut bytes in proptest::collection::vec(any::<u8>(), 24..64),
            len in any::<u8>(),
        ) {
            bytes[0] = 0x20 | (bytes[0] & 0x1f);
            bytes[3] = len;
            let _ = ControlPacket::decode(&bytes);
        }

        #[test]
        fn encode_then_decode_round_trips(p in arb_packet()) {
            prop_assert_eq!(ControlPacket::decode(&p.to_vec()), Ok(p));
        }

        #[test]
        fn decoded_packets_encode_to_their_own_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 24..64),
        ) {
            if let Ok(p) = ControlPacket::decode(&bytes) {
                let again = p.to_vec();
                prop_assert_eq!(ControlPacket::decode(&again), Ok(p));
                // Octets inside Length but past the packet (no A bit) are padding we drop.
                if bytes[3] == 24 || bytes[1] & FLAG_A != 0 {
                    prop_assert_eq!(again, bytes[..usize::from(bytes[3])].to_vec());
                }
            }
        }
    }
}
