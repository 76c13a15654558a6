//! Provider identities and sets: small copyable handles the router hands out.

use std::fmt;

/// The index of a provider in its router's configuration (0..64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId(pub(crate) u8);

impl ProviderId {
    /// The provider's position in the router's provider list.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The provider at `index`, if `index` < 64. Use the router's config to know which exist.
    pub const fn from_index(index: usize) -> Option<ProviderId> {
        if index < crate::config::MAX_PROVIDERS {
            Some(ProviderId(index as u8))
        } else {
            None
        }
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A set of providers of one router, as a 64-bit mask.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProviderSet(u64);

impl ProviderSet {
    /// No provider.
    pub const EMPTY: ProviderSet = ProviderSet(0);

    /// The first `n` providers.
    pub const fn first_n(n: usize) -> ProviderSet {
        if n >= 64 {
            ProviderSet(u64::MAX)
        } else {
            ProviderSet((1u64 << n) - 1)
        }
    }

    /// Whether the set has `id`.
    pub const fn contains(self, id: ProviderId) -> bool {
        self.0 & (1 << id.0) != 0
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: ProviderId) {
        self.0 |= 1 << id.0;
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: ProviderId) {
        self.0 &= !(1 << id.0);
    }

    /// Members of `self` not in `other`.
    pub const fn minus(self, other: ProviderSet) -> ProviderSet {
        ProviderSet(self.0 & !other.0)
    }

    /// Members of both.
    pub const fn and(self, other: ProviderSet) -> ProviderSet {
        ProviderSet(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of members.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The member with the lowest index.
    pub const fn first(self) -> Option<ProviderId> {
        if self.0 == 0 {
            None
        } else {
            Some(ProviderId(self.0.trailing_zeros() as u8))
        }
    }

    /// The `n`-th member in index order.
    pub fn nth(self, n: usize) -> Option<ProviderId> {
        self.iter().nth(n)
    }

    /// Members in index order.
    pub fn iter(self) -> impl Iterator<Item = ProviderId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            Some(ProviderId(i))
        })
    }
}

impl FromIterator<ProviderId> for ProviderSet {
    fn from_iter<T: IntoIterator<Item = ProviderId>>(iter: T) -> Self {
        let mut set = ProviderSet::EMPTY;
        for id in iter {
            set.insert(id);
        }
        set
    }
}

impl fmt::Debug for ProviderSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|p| p.0)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut s = ProviderSet::EMPTY;
        s.insert(ProviderId(3));
        s.insert(ProviderId(63));
        s.insert(ProviderId(0));
        assert_eq!(s.len(), 3);
        assert_eq!(s.first(), Some(ProviderId(0)));
        assert_eq!(s.nth(2), Some(ProviderId(63)));
        s.remove(ProviderId(0));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [ProviderId(3), ProviderId(63)]
        );
        assert_eq!(ProviderSet::first_n(64).len(), 64);
        assert_eq!(ProviderSet::first_n(3).minus(s).len(), 3);
    }
}
