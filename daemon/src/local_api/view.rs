//! The view the speaker serves: the wire types of [`edgelb_view`] (the JSON `edgelbctl` reads),
//! with the two Service-sized lists as [`Section`]s the speaker builds only on request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use edgelb_view::{
    AllocationView, AnnouncementView, CandidateView, CloudCallView, CloudLbView, CloudView,
    FamilyNotAnnouncedView, Health, InterfaceView, IpRankView, MemberView, Mode, NodePoolView,
    PeerView, PolicyRouteEntryView, PolicyRouteView, PolicyRuleView, PoolView, ServiceView,
    VIEW_API,
};

/// The speaker's [`edgelb_view::LocalView`]: the same JSON, the allocations, Services and
/// announcements sections deferred.
pub type LocalView = edgelb_view::LocalView<
    Section<AllocationView>,
    Section<ServiceView>,
    Section<AnnouncementView>,
>;

/// A Service-sized list of the view that the speaker builds only when something reads it
/// (a request serializes it): between requests the speaker keeps what it is built from
/// (snapshot, allocation, candidates: shared with the run loop), not 10 000 rendered
/// entries (issue 17). Serialized as the plain list; a client's copy is the list itself.
pub struct Section<T> {
    /// The list, once built (or as received).
    built: std::sync::OnceLock<Arc<Vec<T>>>,
    /// What builds it, when deferred.
    make: Option<Arc<dyn Fn() -> Vec<T> + Send + Sync>>,
}

impl<T> Section<T> {
    /// A section built by `make` when it is first read (each clone builds its own copy,
    /// and the serializer builds one it does not keep).
    pub fn deferred(make: impl Fn() -> Vec<T> + Send + Sync + 'static) -> Section<T> {
        Section {
            built: std::sync::OnceLock::new(),
            make: Some(Arc::new(make)),
        }
    }

    /// Identity: equal for clones of one section (cheap; no build).
    pub fn id(&self) -> usize {
        match (&self.make, self.built.get()) {
            (Some(m), _) => Arc::as_ptr(m) as *const () as usize,
            (None, Some(v)) => Arc::as_ptr(v) as usize,
            (None, None) => 0,
        }
    }

    /// Calls `f` with the list, building it when deferred and not yet built (that copy is
    /// dropped after `f`).
    pub fn with<R>(&self, f: impl FnOnce(&[T]) -> R) -> R {
        match (self.built.get(), &self.make) {
            (Some(v), _) => f(v),
            (None, Some(make)) => f(&make()),
            (None, None) => f(&[]),
        }
    }
}

impl<T> std::ops::Deref for Section<T> {
    type Target = [T];
    /// Builds (once per clone) and keeps the list.
    fn deref(&self) -> &[T] {
        self.built.get_or_init(|| {
            Arc::new(match &self.make {
                Some(make) => make(),
                None => Vec::new(),
            })
        })
    }
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Section::from(Vec::new())
    }
}

impl<T> From<Vec<T>> for Section<T> {
    fn from(v: Vec<T>) -> Self {
        Section {
            built: std::sync::OnceLock::from(Arc::new(v)),
            make: None,
        }
    }
}

impl<T> Clone for Section<T> {
    /// A deferred section's clone shares what builds it, not a built copy.
    fn clone(&self) -> Self {
        match &self.make {
            Some(make) => Section {
                built: std::sync::OnceLock::new(),
                make: Some(make.clone()),
            },
            None => Section {
                built: self.built.clone(),
                make: None,
            },
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Section<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|v| f.debug_list().entries(v).finish())
    }
}

impl<T: PartialEq> PartialEq for Section<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id() || self.with(|a| other.with(|b| a == b))
    }
}

impl<T: Eq> Eq for Section<T> {}

impl<T: Serialize> Serialize for Section<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with(|v| v.serialize(s))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(Section::from)
    }
}
