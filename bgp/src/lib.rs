//! edgelb-bgp: a BGP-4 speaker that announces routes and imports none.
//!
//! - [`packet`]: the wire format (RFC 4271, 4760, 6793, 2918, 4724, 8654, 1997, 8092),
//!   decode errors mapped to NOTIFICATIONs and RFC 7606 actions.
#![deny(unsafe_code)]

pub mod packet;
