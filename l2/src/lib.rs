//! edgelb-l2: gratuitous ARP and unsolicited NDP for IPs owned by this node.
#![deny(unsafe_code)]
