//! The guest NIC's backend (QEMU `-netdev stream`, vhost-user-net), driving the same `engine`
//! as `failoverd`. Its substance lands with the VMM work; nothing here is used yet.

#![forbid(unsafe_code)]
