//! An admission scope's name (an upstream key × model) and the names an upstream has made,
//! kept so that an attempt looks its name up instead of making it again.

use std::sync::{Arc, RwLock};

use crate::secret::SecretString;

/// The admission scope of an upstream key and model: a hash of the upstream and the key (never
/// the key itself), with the model when limits are per model.
pub(crate) fn scope_of(base_url: &str, key: &SecretString, model: &str, per_model: bool) -> String {
    // The value names shared state in Redis, so it must not change.
    let h = crate::fnv::fnv1a(&[base_url.as_bytes(), &[0], key.expose().as_bytes()]);
    let mut scope = String::with_capacity(17 + if per_model { model.len() } else { 0 });
    crate::hex::push(&mut scope, u128::from(h), 16);
    if per_model {
        scope.push(':');
        scope.push_str(model);
    }
    scope
}

/// Names kept at most, across keys and models (models come from callers): past it, a name is
/// made each time instead.
const MAX_KEPT: usize = 4096;

/// One upstream's scope names, made once per key and model and shared: every attempt needs
/// its scope's name, and making it (a hash of the upstream and the key, written out, and a
/// string) cost more than the lookup. Keyed by the key's identity ([`SecretString::id`], the
/// same by which the key pool tells its keys apart), then the model.
#[derive(Debug, Default)]
pub(crate) struct ScopeNames(RwLock<Kept>);

#[derive(Debug, Default)]
struct Kept {
    by_key: foldhash::HashMap<u64, foldhash::HashMap<Box<str>, Arc<str>>>,
    count: usize,
}

impl ScopeNames {
    /// [`scope_of`] the upstream at `base_url`, `key` and `model`, as a shared string.
    pub(crate) fn name(
        &self,
        base_url: &str,
        key: &SecretString,
        model: &str,
        per_model: bool,
    ) -> Arc<str> {
        let model = if per_model { model } else { "" };
        let id = key.id();
        let kept = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = kept.by_key.get(&id).and_then(|m| m.get(model)) {
            return n.clone();
        }
        drop(kept);
        let name: Arc<str> = Arc::from(scope_of(base_url, key, model, per_model));
        let mut kept = self.0.write().unwrap_or_else(|p| p.into_inner());
        if kept.count < MAX_KEPT {
            let names = kept.by_key.entry(id).or_default();
            if names.insert(model.into(), name.clone()).is_none() {
                kept.count += 1;
            }
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scope names shared state in Redis: replicas of two versions must agree on it.
    #[test]
    fn a_scope_is_the_same_from_version_to_version() {
        let key = SecretString::new("sk-test-123");
        let base = "https://api.openai.com/v1";
        assert_eq!(scope_of(base, &key, "gpt-4o", false), "eb8d3d41f82f104b");
        assert_eq!(
            scope_of(base, &key, "gpt-4o", true),
            "eb8d3d41f82f104b:gpt-4o"
        );
    }

    #[test]
    fn a_kept_name_is_the_name_made_and_is_made_once() {
        let names = ScopeNames::default();
        let base = "https://api.openai.com/v1";
        let (a, b) = (SecretString::new("sk-a"), SecretString::new("sk-b"));
        for (key, model, per_model) in [
            (&a, "gpt-4o", true),
            (&a, "gpt-4o-mini", true),
            (&b, "gpt-4o", true),
            (&a, "gpt-4o", false),
        ] {
            let first = names.name(base, key, model, per_model);
            assert_eq!(&*first, scope_of(base, key, model, per_model));
            let again = names.name(base, key, model, per_model);
            assert!(Arc::ptr_eq(&first, &again), "kept, not made again");
        }
        // Per model or not, a key without a model is one name.
        assert!(Arc::ptr_eq(
            &names.name(base, &a, "x", false),
            &names.name(base, &a, "y", false)
        ));
    }

    #[test]
    fn past_the_bound_names_are_made_each_time() {
        let names = ScopeNames::default();
        let key = SecretString::new("sk-a");
        for i in 0..MAX_KEPT {
            names.name("u", &key, &format!("m{i}"), true);
        }
        let late = names.name("u", &key, "late", true);
        assert_eq!(&*late, scope_of("u", &key, "late", true));
        assert!(!Arc::ptr_eq(&late, &names.name("u", &key, "late", true)));
        assert_eq!(names.0.read().unwrap().count, MAX_KEPT);
    }
}
