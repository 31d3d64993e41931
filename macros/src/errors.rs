//! Collecting every problem of one derive, so the user sees them all at once.

/// The errors found so far, combined into one.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The value, or `None` after recording its error.
    pub(crate) fn check<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// `Err` with every error recorded, if any.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// How a path reads in a message: `a::B<C>`, without token spacing.
pub(crate) fn shown(tokens: &impl quote::ToTokens) -> String {
    tokens.to_token_stream().to_string().replace(' ', "")
}

/// Records an unknown key of `#[attr(..)]` and skips its value, so the keys after it are read
/// (and their mistakes reported) too.
pub(crate) fn unknown_key(
    meta: &syn::meta::ParseNestedMeta<'_>,
    errors: &mut Errors,
    message: String,
) -> syn::Result<()> {
    errors.push(meta.error(message));
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.step(|cursor| {
            let mut rest = *cursor;
            while let Some((token, next)) = rest.token_tree() {
                match token {
                    proc_macro2::TokenTree::Punct(p) if p.as_char() == ',' => break,
                    _ => rest = next,
                }
            }
            Ok(((), rest))
        })?;
    } else if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
        // `key(..)`: skip the group.
        meta.input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// Whether `attr` is the helper attribute `name`, written `#[name]` or `#[r#name]`: the
/// compiler takes both for the derive's attribute, so neither may be passed over.
pub(crate) fn is_attr(attr: &syn::Attribute, name: &str) -> bool {
    attr.path().get_ident().is_some_and(|ident| syn::ext::IdentExt::unraw(ident) == name)
}

/// The attributes inside a type: on its variants, and on the fields of the type or of its
/// variants. A derive whose attribute belongs on the type refuses one there rather than pass
/// over it.
pub(crate) fn inner_attrs(data: &syn::Data) -> Vec<&syn::Attribute> {
    let mut attrs = Vec::new();
    match data {
        syn::Data::Struct(s) => attrs.extend(s.fields.iter().flat_map(|f| &f.attrs)),
        syn::Data::Enum(e) => {
            for variant in &e.variants {
                attrs.extend(&variant.attrs);
                attrs.extend(variant.fields.iter().flat_map(|f| &f.attrs));
            }
        }
        syn::Data::Union(u) => attrs.extend(u.fields.named.iter().flat_map(|f| &f.attrs)),
    }
    attrs
}
