//! vmspace: a virtual-memory subsystem in user space whose page faults do not
//! serialize on one address-space-wide lock.
