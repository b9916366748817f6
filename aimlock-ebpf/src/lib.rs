#![no_std]
// The library target only exists so that aimlock-user can declare a build dependency on this
// crate; the programs are in the `aimlock` binary target.
