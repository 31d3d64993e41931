//! `#[derive(Event)]`: the `Event` impl naming a type's stored name, version and former names.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitInt, LitStr};

use crate::errors::{Errors, inner_attrs, is_attr, shown, unknown_key};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut name: Option<LitStr> = None;
    let mut version: Option<LitInt> = None;
    let mut former: Option<Vec<LitStr>> = None;
    for attr in input.attrs.iter().filter(|a| is_attr(a, "event")) {
        let parsed = attr.parse_nested_meta(|meta| {
            let key = shown(&meta.path);
            let twice = || meta.error(format!("`{key}` is given twice in `#[event(..)]`"));
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    errors.push(syn::Error::new(lit.span(), "an event type's `name` cannot be empty"));
                }
                if name.replace(lit).is_some() {
                    errors.push(twice());
                }
            } else if meta.path.is_ident("version") {
                let lit: LitInt = meta.value()?.parse()?;
                let Ok(value) = lit.base10_parse::<u32>() else {
                    errors.push(syn::Error::new(
                        lit.span(),
                        "`version` is a schema version: a `u32` from 1 up",
                    ));
                    return Ok(());
                };
                if value == 0 {
                    errors.push(syn::Error::new(
                        lit.span(),
                        "schema versions start at 1: `version = 1` is the first shape (and the default)",
                    ));
                }
                // Stores keep schema versions up to PostgreSQL's `integer` maximum and refuse
                // every append of an event above it: such a type could never be stored.
                if value > i32::MAX as u32 {
                    errors.push(syn::Error::new(
                        lit.span(),
                        format!(
                            "a store keeps schema versions up to {} and refuses events above it",
                            i32::MAX
                        ),
                    ));
                }
                if version.replace(LitInt::new(&value.to_string(), lit.span())).is_some() {
                    errors.push(twice());
                }
            } else if meta.path.is_ident("former") {
                let value = meta.value()?;
                let content;
                syn::bracketed!(content in value);
                let names = content.parse_terminated(|p| p.parse::<LitStr>(), syn::Token![,])?;
                let names: Vec<LitStr> = names.into_iter().collect();
                for (i, old) in names.iter().enumerate() {
                    if old.value().is_empty() {
                        errors.push(syn::Error::new(
                            old.span(),
                            "a former name cannot be empty: no event is stored under it",
                        ));
                    } else if names[..i].iter().any(|n| n.value() == old.value()) {
                        errors.push(syn::Error::new(
                            old.span(),
                            format!("`{}` is listed twice in `former`", old.value()),
                        ));
                    }
                }
                if former.replace(names).is_some() {
                    errors.push(twice());
                }
            } else {
                return unknown_key(
                    &meta,
                    &mut errors,
                    format!(
                        "unknown key `{key}` in `#[event(..)]`; expected `name = \"..\"`, `version = N` or `former = [\"OldName\", ..]`"
                    ),
                );
            }
            Ok(())
        });
        errors.check(parsed);
    }
    for attr in inner_attrs(&input.data).into_iter().filter(|a| is_attr(a, "event")) {
        errors.push(syn::Error::new_spanned(
            attr,
            "`#[event(..)]` goes on the event type, not on a variant or a field: the type is stored under one name and version (`#[event(name = \"..\")] enum AccountEvent { .. }`)",
        ));
    }
    let ident = &input.ident;
    // The type's name as written, without the `r#` of a raw identifier.
    let name = name.unwrap_or_else(|| {
        LitStr::new(&syn::ext::IdentExt::unraw(ident).to_string(), ident.span())
    });
    for old in former.iter().flatten().filter(|old| old.value() == name.value()) {
        errors.push(syn::Error::new(
            old.span(),
            format!(
                "`{}` is the type's own name, not a former one: its events stored under it at an \
                 older version are read through the upcasts already",
                old.value()
            ),
        ));
    }
    errors.finish()?;

    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let fingerprint = LitInt::new(&format!("{:#018x}u64", fingerprint(input)), ident.span());
    let version = version.map(|v| quote!(const SCHEMA_VERSION: u32 = #v;));
    let former =
        former.map(|names| quote!(const FORMER_TYPES: &'static [&'static str] = &[#(#names),*];));
    Ok(quote! {
        impl #impl_generics ::eventcore::Event for #ident #ty_generics #where_clause {
            const EVENT_TYPE: &'static str = #name;
            const FINGERPRINT: u64 = #fingerprint;
            #version
            #former
        }
    })
}

/// The fingerprint of a type's definition (`Event::FINGERPRINT`): FNV-1a, 64 bits, of its
/// variants and fields as written (names, types, discriminants) with its `#[serde(..)]`
/// attributes (and the `#[cfg_attr(..)]` ones that name `serde`), the type's own and its
/// variants' and fields', token by token (see
/// [`token_text`]). Doc comments, other attributes and layout do not count; renaming the
/// type does not either (its stored name and version are keyed on their own).
pub(crate) fn fingerprint(input: &DeriveInput) -> u64 {
    use quote::ToTokens;
    let serde = |attrs: &[syn::Attribute]| -> TokenStream {
        let counts = |a: &&syn::Attribute| {
            a.path().is_ident("serde")
                || (a.path().is_ident("cfg_attr") && names_serde(a.meta.to_token_stream()))
        };
        attrs.iter().filter(counts).map(ToTokens::to_token_stream).collect()
    };
    let fields = |fields: &syn::Fields| -> TokenStream {
        let each = fields.iter().map(|f| {
            let (attrs, ident, ty) = (serde(&f.attrs), &f.ident, &f.ty);
            quote!(#attrs #ident : #ty ;)
        });
        match fields {
            syn::Fields::Named(_) => quote!({ #(#each)* }),
            syn::Fields::Unnamed(_) => quote!(( #(#each)* )),
            syn::Fields::Unit => quote!(),
        }
    };
    let attrs = serde(&input.attrs);
    let body = match &input.data {
        syn::Data::Enum(data) => {
            let variants = data.variants.iter().map(|v| {
                let (attrs, ident, fields) = (serde(&v.attrs), &v.ident, fields(&v.fields));
                let discriminant = v.discriminant.as_ref().map(|(_, d)| quote!(= #d));
                quote!(#attrs #ident #fields #discriminant ,)
            });
            quote!(enum { #(#variants)* })
        }
        syn::Data::Struct(data) => {
            let fields = fields(&data.fields);
            quote!(struct #fields)
        }
        syn::Data::Union(data) => {
            let fields = fields(&syn::Fields::Named(data.fields.clone()));
            quote!(union #fields)
        }
    };
    let generics = &input.generics;
    let mut text = String::new();
    token_text(quote!(#attrs #generics #body), &mut text);
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `tokens` as text that depends on the tokens alone, not on how they were spaced: each token
/// followed by one space, a literal as written (its spaces kept: `"Order Placed"` and
/// `"OrderPlaced"` are two serde names), a group between its delimiters (an invisible one, as
/// a `macro_rules!` expansion leaves, as its tokens).
fn token_text(tokens: TokenStream, text: &mut String) {
    use proc_macro2::{Delimiter, TokenTree};
    for token in tokens {
        match token {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("( ", ") "),
                    Delimiter::Brace => ("{ ", "} "),
                    Delimiter::Bracket => ("[ ", "] "),
                    Delimiter::None => ("", ""),
                };
                text.push_str(open);
                token_text(group.stream(), text);
                text.push_str(close);
            }
            TokenTree::Ident(ident) => text.push_str(&format!("{ident} ")),
            TokenTree::Punct(punct) => text.push_str(&format!("{} ", punct.as_char())),
            TokenTree::Literal(literal) => text.push_str(&format!("{literal} ")),
        }
    }
}

/// Whether `tokens` name `serde` anywhere: a `#[cfg_attr(.., serde(..))]` changes what is
/// stored when its condition holds, as `#[serde(..)]` does.
fn names_serde(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "serde",
        proc_macro2::TokenTree::Group(group) => names_serde(group.stream()),
        _ => false,
    })
}
