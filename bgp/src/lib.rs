//! edgelb-bgp: a BGP-4 speaker that announces routes and imports none.
#![deny(unsafe_code)]
