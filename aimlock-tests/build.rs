// The same build of the kernel programs as aimlock's: hookfloor embeds the `hookfloor` object.
include!("../aimlock-user/build.rs");
