//! The repairs that change the namespace: cutting directory loops and giving lost inodes a
//! name in `/lost+found`.

use super::*;

/// Cuts the loop of directories that `d` is in or under: its smallest member leaves its
/// parent in the loop for `/lost+found` (as `#ino`), with the link counts, sizes and
/// `..` of the directories involved kept right, so everything in the loop is reachable
/// again.
pub(super) fn cut_loop(
    inodes: &mut HashMap<u64, Inode>,
    next_ino: &mut u64,
    dir_parent: &mut HashMap<u64, u64>,
    d: u64,
) {
    let mut path = vec![d];
    let start = loop {
        let Some(&p) = dir_parent.get(path.last().expect("path")) else {
            return; // reaches a directory without a name: not a loop
        };
        if p == ROOT_INO {
            return; // an earlier cut already made it reachable
        }
        if let Some(i) = path.iter().position(|&x| x == p) {
            break i;
        }
        path.push(p);
    };
    let x = *path[start..].iter().min().expect("a loop");
    let p = dir_parent[&x];
    let parent = inodes.get_mut(&p).expect("parent in the loop");
    let names: Vec<Vec<u8>> = parent
        .dir
        .iter()
        .filter(|(_, e)| e.ino == x)
        .map(|(n, _)| n.to_vec())
        .collect();
    for n in &names {
        parent.dir.remove(n);
    }
    parent.nlink = parent.nlink.saturating_sub(1);
    parent.size = parent.dir.len() as u64;
    let existed = inodes[&ROOT_INO].dir.iter().count();
    let lf = lost_and_found(inodes, next_ino);
    if inodes[&ROOT_INO].dir.iter().count() != existed {
        // A new /lost+found: one more subdirectory of the root.
        inodes.get_mut(&ROOT_INO).expect("root").nlink += 1;
        dir_parent.insert(lf, ROOT_INO);
    }
    if lf >= *next_ino {
        *next_ino = lf + 1;
    }
    let l = inodes.get_mut(&lf).expect("lost+found");
    let name = free_name(&l.dir, &format!("#{x}"));
    l.dir.insert(&name, x, Kind::Dir);
    l.nlink += 1;
    l.size = l.dir.len() as u64;
    inodes.get_mut(&x).expect("loop member").parent = lf;
    dir_parent.insert(x, lf);
}

/// `base`, or when `dir` holds that name already, the first free `base.N`.
pub(super) fn free_name(dir: &crate::meta::inode::Dir, base: &str) -> Vec<u8> {
    std::iter::once(base.to_string())
        .chain((1u64..).map(|n| format!("{base}.{n}")))
        .map(String::into_bytes)
        .find(|n| dir.get(n).is_none())
        .expect("a free name")
}

/// Finds or makes `/lost+found`; returns its inode number. When the name is taken by
/// something that is not a directory (a user's file), that keeps its name and the directory
/// is made as `/lost+found.N`, the first such name that is free (or reused, a directory
/// already).
pub(super) fn lost_and_found(inodes: &mut HashMap<u64, Inode>, next_ino: &u64) -> u64 {
    let root = &inodes[&ROOT_INO].dir;
    let mut name = b"lost+found".to_vec();
    if let Some(e) = root.get(&name) {
        if e.kind == Kind::Dir {
            return e.ino;
        }
        name = (1u64..)
            .map(|n| format!("lost+found.{n}").into_bytes())
            .find(|n| root.get(n).is_none_or(|e| e.kind == Kind::Dir))
            .expect("a free name");
        if let Some(e) = root.get(&name) {
            return e.ino; // made by an earlier repair
        }
    }
    let ino = (*next_ino).max(inodes.keys().max().copied().unwrap_or(ROOT_INO) + 1);
    let now = Time::now();
    inodes.insert(
        ino,
        Inode::new(ino, Kind::Dir, 0o700, 0, 0, 0, ROOT_INO, now),
    );
    let root = inodes.get_mut(&ROOT_INO).expect("root");
    root.dir.insert(&name, ino, Kind::Dir);
    root.size = root.dir.len() as u64;
    ino
}
