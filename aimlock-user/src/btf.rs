//! Struct layouts from the running kernel's BTF, for the BTF tracepoint programs.
//!
//! aimlock's programs are built without CO-RE relocations, so the offsets of the few fields
//! they read are looked up here at load time and handed to them (and to the decoder). The BTF
//! is opened once and each struct looked up once: in the mapped form, a look-up by name scans
//! every type, and an emulated test machine spends seconds on each tracer start doing so.

use std::{cell::RefCell, collections::HashMap};

use aimlock_common::{BtfOffsets, Config, LineageFields, LockFields, btf_payload};
use anyhow::{Context as _, Result, anyhow};
use aya::util::KernelVersion;
use btf_rs::{Backend, Btf, Type};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// What the BTF programs need, and how to decode what they write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockLayout {
    pub offsets: BtfOffsets,
    /// Where the decoder finds each field in a BTF program's payload.
    pub fields: LockFields,
}

/// Reads the layout of `struct inode`, `struct super_block`, `struct file_lock`, `struct file`,
/// `struct dentry` and `struct task_struct`.
pub fn lock_layout(layout: &KernelStructs) -> Result<LockLayout> {
    let inode_ino = layout.offset("inode", &["i_ino"])?;
    let inode_sb = layout.offset("inode", &["i_sb"])?;
    let inode_generation = layout.offset("inode", &["i_generation"])?;
    // `i_nlink` shares a union with `__i_nlink`, its writable name.
    let inode_nlink = layout
        .offset("inode", &["i_nlink"])
        .or_else(|_| layout.offset("inode", &["__i_nlink"]))?;
    let file_dentry = layout.offset("file", &["f_path", "dentry"])?;
    let dentry_name = layout.offset("dentry", &["d_name", "name"])?;
    let dentry_hash_len = layout.offset("dentry", &["d_name", "hash_len"])?;
    let dentry_parent = layout.offset("dentry", &["d_parent"])?;
    let dentry_inode = layout.offset("dentry", &["d_inode"])?;
    let task_comm = layout.offset("task_struct", &["comm"])?;
    let task_group_leader = layout.offset("task_struct", &["group_leader"])?;
    let task_thread_pid = layout.offset("task_struct", &["thread_pid"])?;
    let pid_level = layout.offset("pid", &["level"])?;
    let pid_numbers = layout.offset("pid", &["numbers"])?;
    let upid_size = layout.size("upid")?;
    // Named so from 5.5; where it is not, user space reads /proc instead (0: not read).
    let task_start_boottime = layout
        .offset("task_struct", &["start_boottime"])
        .unwrap_or(0);
    let task_flags = layout.offset("task_struct", &["flags"])?;
    let sb_dev = layout.offset("super_block", &["s_dev"])?;
    // From 6.9 the common fields live in `struct file_lock_core c`.
    let lock = |core: &str, old: &str| {
        layout
            .offset("file_lock", &["c", core])
            .or_else(|_| layout.offset("file_lock", &[old]))
    };
    let owner = lock("flc_owner", "fl_owner")?;
    let flags = lock("flc_flags", "fl_flags")?;
    let lock_type = lock("flc_type", "fl_type")?;
    let fl_pid = lock("flc_pid", "fl_pid")?;
    let lock_file = lock("flc_file", "fl_file")?;
    let start = layout.offset("file_lock", &["fl_start"])?;
    let end = layout.offset("file_lock", &["fl_end"])?;

    let narrow = |offset: u32| {
        u16::try_from(offset).map_err(|_| anyhow!("offset {offset} does not fit a record"))
    };
    Ok(LockLayout {
        offsets: BtfOffsets {
            inode_ino: narrow(inode_ino)?,
            inode_sb: narrow(inode_sb)?,
            inode_generation: narrow(inode_generation)?,
            inode_nlink: narrow(inode_nlink)?,
            lock_file: narrow(lock_file)?,
            file_dentry: narrow(file_dentry)?,
            dentry_name: narrow(dentry_name)?,
            dentry_hash_len: narrow(dentry_hash_len)?,
            dentry_parent: narrow(dentry_parent)?,
            dentry_inode: narrow(dentry_inode)?,
            sb_dev: narrow(sb_dev)?,
            lock_owner: narrow(owner)?,
            lock_flags: narrow(flags)?,
            lock_type: narrow(lock_type)?,
            lock_pid: narrow(fl_pid)?,
            lock_start: narrow(start)?,
            lock_end: narrow(end)?,
            task_comm: narrow(task_comm)?,
            comm_direct: u8::from(has_current_task_btf()),
            _pad: 0,
            task_group_leader: narrow(task_group_leader)?,
            task_thread_pid: narrow(task_thread_pid)?,
            pid_level: narrow(pid_level)?,
            pid_numbers: narrow(pid_numbers)?,
            upid_size: narrow(upid_size)?,
            task_start_boottime: narrow(task_start_boottime)?,
            task_flags: narrow(task_flags)?,
        },
        fields: LockFields {
            ino: btf_payload::INO,
            dev: btf_payload::DEV,
            ret: btf_payload::RET,
            owner: btf_payload::OWNER,
            flags: btf_payload::FLAGS,
            lock_type: btf_payload::TYPE,
            fl_pid: btf_payload::PID,
            start: btf_payload::START,
            end: btf_payload::END,
            blocker: aimlock_common::ABSENT,
        },
    })
}

/// Offsets the descriptor-passing programs read: the user's `struct user_msghdr` and
/// `struct cmsghdr`, and the path from a task to its open files. The syscall tracepoints'
/// own fields are left to the loader.
pub fn lineage_layout(layout: &KernelStructs) -> Result<LineageFields> {
    let narrow = |offset: u32| {
        u16::try_from(offset).map_err(|_| anyhow!("offset {offset} does not fit a record"))
    };
    let cmsg_len = layout.offset("cmsghdr", &["cmsg_len"])?;
    if cmsg_len != 0 {
        return Err(anyhow!("struct cmsghdr does not begin with cmsg_len"));
    }
    Ok(LineageFields {
        msghdr_control: narrow(layout.offset("user_msghdr", &["msg_control"])?)?,
        msghdr_controllen: narrow(layout.offset("user_msghdr", &["msg_controllen"])?)?,
        cmsg_level: narrow(layout.offset("cmsghdr", &["cmsg_level"])?)?,
        cmsg_type: narrow(layout.offset("cmsghdr", &["cmsg_type"])?)?,
        cmsg_size: narrow(layout.size("cmsghdr")?)?,
        task_files: narrow(layout.offset("task_struct", &["files"])?)?,
        files_fdt: narrow(layout.offset("files_struct", &["fdt"])?)?,
        fdtable_fd: narrow(layout.offset("fdtable", &["fd"])?)?,
        ..Config::DEFAULT.lineage
    })
}

/// Whether the kernel has the `bpf_get_current_task_btf` helper (added in 5.11).
fn has_current_task_btf() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(5, 11, 0))
}

/// The running kernel's BTF, and the structs looked up in it so far.
pub struct KernelStructs {
    btf: Btf,
    found: RefCell<HashMap<String, Type>>,
}

impl KernelStructs {
    /// Mapped rather than parsed whole: only a dozen structs are looked up. Kernels before 6.x
    /// (5.10 here) cannot map their BTF file (ENODEV): there it is read whole.
    pub fn open() -> Result<Self> {
        let btf = Btf::from_file_with_backend(VMLINUX, Backend::Mmap)
            .or_else(|_| Btf::from_file_with_backend(VMLINUX, Backend::Cache))
            .with_context(|| format!("cannot read {VMLINUX}"))?;
        Ok(Self {
            btf,
            found: RefCell::default(),
        })
    }

    fn named_struct(&self, name: &str) -> Result<Type> {
        if let Some(found) = self.found.borrow().get(name) {
            return Ok(found.clone());
        }
        let found = self
            .btf
            .resolve_types_by_name(name)
            .ok()
            .and_then(|types| types.into_iter().find(|t| matches!(t, Type::Struct(_))))
            .ok_or_else(|| anyhow!("the kernel's BTF has no struct {name}"))?;
        self.found
            .borrow_mut()
            .insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// Size in bytes of `struct name`.
    fn size(&self, name: &str) -> Result<u32> {
        match self.named_struct(name)? {
            Type::Struct(found) => Ok(u32::try_from(found.size())?),
            _ => unreachable!("named_struct only returns structs"),
        }
    }

    /// Byte offset of `path` (a member, then members of that member...) in `struct name`.
    fn offset(&self, name: &str, path: &[&str]) -> Result<u32> {
        let mut current = self.named_struct(name)?;
        let mut offset = 0;
        for member_name in path {
            let (member_offset, member_type) = self
                .member(&current, member_name)
                .ok_or_else(|| anyhow!("struct {name} has no member {}", path.join(".")))?;
            offset += member_offset;
            current = member_type;
        }
        Ok(offset)
    }

    /// Finds a member by name, looking through anonymous structs and unions.
    fn member(&self, container: &Type, wanted: &str) -> Option<(u32, Type)> {
        let (Type::Struct(fields) | Type::Union(fields)) = container else {
            return None;
        };
        for member in &fields.members {
            let name = self.btf.resolve_name(member).unwrap_or_default();
            let member_type = self.resolved(self.btf.resolve_chained_type(member).ok()?);
            let offset = member.bit_offset() / 8;
            if name == wanted {
                return Some((offset, member_type));
            }
            if name.is_empty()
                && let Some((inner, found)) = self.member(&member_type, wanted)
            {
                return Some((offset + inner, found));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type underneath.
    fn resolved(&self, mut current: Type) -> Type {
        loop {
            let next = match &current {
                Type::Typedef(t) => self.btf.resolve_chained_type(t),
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)
                }
                _ => return current,
            };
            match next {
                Ok(next) => current = next,
                Err(_) => return current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF, as the tracer does (readable without privileges).
    #[test]
    fn the_running_kernel_describes_every_field_the_programs_read() {
        let structs = KernelStructs::open().expect("this kernel's BTF");
        let layout = lock_layout(&structs).expect("this kernel's BTF describes struct file_lock");
        let offsets = layout.offsets;
        let mut in_lock = [
            offsets.lock_owner,
            offsets.lock_flags,
            offsets.lock_type,
            offsets.lock_pid,
            offsets.lock_start,
            offsets.lock_end,
        ];
        in_lock.sort();
        assert!(
            in_lock.windows(2).all(|pair| pair[0] < pair[1]),
            "{offsets:?}"
        );
        assert!(
            offsets.lock_start + 8 == offsets.lock_end,
            "fl_end follows fl_start: {offsets:?}"
        );
        assert_ne!(layout.offsets.inode_ino, layout.offsets.inode_sb);
        assert_ne!(offsets.task_start_boottime, 0, "a process's start time");
        // Past `thread_info` (whose own `flags` come first where it is in the task) and the
        // task's state: never at the start.
        assert!(offsets.task_flags > 0, "{offsets:?}");
    }

    #[test]
    fn the_running_kernel_describes_the_descriptor_passing_structs() {
        let structs = KernelStructs::open().expect("this kernel's BTF");
        let fields =
            lineage_layout(&structs).expect("this kernel's BTF describes struct user_msghdr");
        // The user ABI on 64-bit Linux.
        assert_eq!((fields.msghdr_control, fields.msghdr_controllen), (32, 40));
        assert_eq!(
            (fields.cmsg_level, fields.cmsg_type, fields.cmsg_size),
            (8, 12, 16)
        );
        assert_ne!(fields.files_fdt, fields.fdtable_fd);
    }
}
