//! `#[derive(Command)]`: the `Command` impl of a struct whose fields bind its slots.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::{Data, DeriveInput, Fields, Ident, Path, Type, spanned::Spanned};

use crate::errors::{Errors, is_attr, shown, unknown_key};

/// What `#[command(..)]` says.
#[derive(Default)]
struct Options {
    state: Option<Type>,
    error: Option<Type>,
    continuation: Option<Type>,
}

/// A field bound to a slot by `#[slot(Slot)]`.
struct SlotField<'a> {
    slot: Path,
    /// The slot as written, for messages and to find a slot bound twice (printed once).
    name: String,
    field: &'a Ident,
    ty: &'a Type,
}

/// Up to how many slots a command's set is written `SetN<..>` and its bindings as a tuple
/// converted by frunk's `From` impls of tuples (`tests/derive.rs` binds a command of 16 slots,
/// and one of 17); beyond, both as nested `HCons` cells.
pub(crate) const FLAT_BINDINGS: usize = 16;

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Some(&named.named),
            Fields::Unit => None,
            Fields::Unnamed(_) => {
                return Err(syn::Error::new(
                    input.ident.span(),
                    "`#[derive(Command)]` needs a struct with named fields, so each slot's field can be named: `struct Transfer { #[slot(FromAccount)] from: AccountId, .. }`",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new(
                input.ident.span(),
                "`#[derive(Command)]` needs a struct with named fields; a command is one request, with a field per slot it binds",
            ));
        }
    };

    let options = options(input, &mut errors);
    for attr in &input.attrs {
        if is_attr(attr, "slot") {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[slot(..)]` goes on the field that holds the slot's stream id, not on the struct: `#[slot(FromAccount)] from: AccountId`",
            ));
        } else if is_attr(attr, "key") {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[key]` goes on the field that holds the command's `IdempotencyKey`, not on the struct: `#[key] key: IdempotencyKey`",
            ));
        } else if is_attr(attr, "fingerprint") {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[fingerprint]` goes on each field to put in the fingerprint stored with the command's idempotency key, not on the struct: `#[fingerprint] amount: u64`",
            ));
        }
    }
    let mut slots: Vec<SlotField<'_>> = Vec::new();
    let mut key: Option<(&Ident, &Type)> = None;
    // The fields `#[fingerprint]` marks, in declaration order.
    let mut printed: Vec<(&Ident, &Type)> = Vec::new();
    for field in fields.into_iter().flatten() {
        let Some(name) = &field.ident else { continue };
        let keyed = field.attrs.iter().any(|a| is_attr(a, "key"));
        // The slot this field binds already, for a second `#[slot(..)]` on it.
        let mut bound_here: Option<String> = None;
        for attr in &field.attrs {
            if is_attr(attr, "fingerprint") {
                if let Err(e) = attr.meta.require_path_only() {
                    errors.push(syn::Error::new(
                        e.span(),
                        "`#[fingerprint]` takes no arguments: it puts the field in the fingerprint stored with the command's idempotency key",
                    ));
                } else if keyed {
                    // A slot's field may be marked: its id then tells the roles of the streams
                    // apart (a transfer from A to B from one from B to A).
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!(
                            "`#[fingerprint]` on `{name}`, the `#[key]` field: the fingerprint is stored with the key, to tell apart the requests sent under it; mark the fields that make a request what it is (an amount, say)"
                        ),
                    ));
                } else if printed.iter().any(|(f, _)| *f == name) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!("`#[fingerprint]` is given twice on `{name}`"),
                    ));
                } else {
                    printed.push((name, &field.ty));
                }
            }
        }
        for attr in &field.attrs {
            if is_attr(attr, "command") {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "`#[command(..)]` goes on the struct, not on a field: `#[command(state = .., error = ..)] struct Transfer { .. }`",
                ));
            } else if is_attr(attr, "slot") {
                let Some(slot) = errors.check(slot_path(attr)) else { continue };
                let name_of_slot = shown(&slot);
                let twice = slots.iter().find(|s| s.name == name_of_slot);
                if let Some(first) = &bound_here {
                    errors.push(syn::Error::new_spanned(
                        &slot,
                        format!(
                            "field `{name}` binds two slots, `{first}` and `{name_of_slot}`; a field binds one slot (give each slot its own field)"
                        ),
                    ));
                } else if let Some(first) = twice {
                    errors.push(syn::Error::new_spanned(
                        &slot,
                        format!(
                            "slot `{name_of_slot}` is bound twice: fields `{}` and `{name}`; a command holds each slot once (declare a second slot for the second role)",
                            first.field
                        ),
                    ));
                } else {
                    bound_here = Some(name_of_slot.clone());
                    slots.push(SlotField { slot, name: name_of_slot, field: name, ty: &field.ty });
                }
            } else if is_attr(attr, "key") {
                if let Err(e) = attr.meta.require_path_only() {
                    errors.push(syn::Error::new(
                        e.span(),
                        "`#[key]` takes no arguments: it marks the field holding the command's `IdempotencyKey` (or `Option<IdempotencyKey>`)",
                    ));
                } else if key.is_some_and(|(first, _)| first == name) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!("`#[key]` is given twice on `{name}`"),
                    ));
                } else if let Some((first, _)) = key {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!(
                            "two `#[key]` fields: `{first}` and `{name}`; a command has at most one idempotency key (build it from both values)"
                        ),
                    ));
                } else {
                    key = Some((name, &field.ty));
                }
            }
        }
    }
    errors.finish()?;
    let (Some(state), Some(error)) = (options.state, options.error) else {
        // Not reached: `options` reported what is missing, so `finish` returned it.
        return Err(syn::Error::new(
            input.ident.span(),
            "`#[derive(Command)]` needs `#[command(state = .., error = ..)]`",
        ));
    };

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let continuation = options
        .continuation
        .map_or_else(|| quote!(::eventcore::NoDiscovery), |c| c.into_token_stream());
    // The set is written as `SetN<A, B, ..>`, an alias of the `HCons` cells `Streams![..]`
    // expands to: the same type, named in one path rather than one per slot and without a
    // recursive macro expansion per slot in every command (measured in the compile-time bench,
    // issue #17). Past `FLAT_BINDINGS` slots, as the cells themselves.
    let heads = slots.iter().map(|s| &s.slot);
    let streams = if slots.is_empty() {
        quote!(::eventcore::command::HNil)
    } else if slots.len() <= FLAT_BINDINGS {
        let set = quote::format_ident!("Set{}", slots.len());
        quote!(::eventcore::__derive::#set<#(#heads),*>)
    } else {
        let closing = slots.iter().map(|_| quote!(>));
        quote!(#(::eventcore::command::HCons<#heads,)* ::eventcore::command::HNil #(#closing)*)
    };
    // Without generics, where the state is a plain type, each slot is bound through
    // `__derive::bind::<Slot, State>`, which compiles only when the state folds the slot: a
    // missing fold is reported at `#[slot(..)]` (the slot's name keeps its span), naming the
    // slot, beside the impl's own bound (`FoldAll` over the whole set). The check rides on the
    // binding the impl writes anyway rather than on an item of its own, which `cargo check`
    // would track again on every edit (issue #17). A generic command binds through
    // `Slot::bind`: its state depends on the parameters.
    let checked = input.generics.params.is_empty();
    // The method's `self`, spanned as the method is; read through `this` (see `binds`).
    let receiver = quote!(self);
    let binds: Vec<TokenStream> = slots
        .iter()
        .map(|SlotField { slot, field, ty, .. }| {
            // Spanned at the field: a field of the wrong key type is reported there, "expected
            // `&AccountId`, found `&TransferId`" (or without the `&` for a generic command).
            // `self` is read through `this`, a name spanned there too: `self` spanned at the
            // type would be resolved where the type was written, which is not the method when
            // a `macro_rules!` writes the derive and its caller the type (E0424), and a `self`
            // spanned otherwise would move the error to the derive.
            if checked {
                // By reference: `bind` clones the key (compiled once per key type).
                quote_spanned! {ty.span()=>
                    { let this = #receiver; ::eventcore::__derive::bind::<#slot, #state>(&this.#field) }
                }
            } else {
                // The clone names its trait: a method call `.clone()` would be ambiguous
                // beside a trait of the user's with a `clone`.
                quote_spanned! {ty.span()=>
                    { let this = #receiver; <#slot as ::eventcore::Slot>::bind(<#ty as ::core::clone::Clone>::clone(&this.#field)) }
                }
            }
        })
        .collect();
    // The bindings, flat too (rather than through `hlist![..]`): a tuple of them, made the
    // set's HList by frunk's `From` (for up to `FLAT_BINDINGS` slots), else nested `HCons` cells.
    let bindings = if binds.is_empty() {
        quote!(::eventcore::command::HNil)
    } else if binds.len() <= FLAT_BINDINGS {
        quote!(::core::convert::From::from((#(#binds,)*)))
    } else {
        binds.iter().rev().fold(
            quote!(::eventcore::command::HNil),
            |tail, bind| quote!(::eventcore::command::HCons { head: #bind, tail: #tail }),
        )
    };
    let idempotency_key = key.map(|(field, ty)| {
        let value = quote_spanned! {ty.span()=>
            let this = #receiver;
            ::eventcore::__derive::KeyField::idempotency_key(&this.#field)
        };
        quote! {
            fn idempotency_key(&self) -> ::core::option::Option<::eventcore::IdempotencyKey> {
                #value
            }
        }
    });

    // Spanned at each field's type: a type without a stable encoding is reported there.
    let request_fields = (!printed.is_empty()).then(|| {
        let adds = printed.iter().map(|(field, ty)| {
            let label = syn::ext::IdentExt::unraw(*field).to_string();
            // The argument `fields` is the method's (spanned as it is), `self` read as in
            // the bindings.
            let fields = quote!(fields);
            quote_spanned! {ty.span()=>
                { let this = #receiver; ::eventcore::RequestFields::add(#fields, #label, &this.#field); }
            }
        });
        quote! {
            fn request_fields(&self, fields: &mut ::eventcore::RequestFields) {
                #(#adds)*
            }
        }
    });

    Ok(quote! {
        impl #impl_generics ::eventcore::Command for #ident #ty_generics #where_clause {
            type Streams = #streams;
            type State = #state;
            type Error = #error;
            type Continuation = #continuation;

            fn streams(&self) -> ::eventcore::Bindings<Self::Streams> {
                #bindings
            }

            #idempotency_key

            #request_fields
        }
    })
}

/// Reads every `#[command(..)]` attribute, reporting unknown, repeated and missing keys.
fn options(input: &DeriveInput, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let mut seen = false;
    for attr in input.attrs.iter().filter(|a| is_attr(a, "command")) {
        seen = true;
        let parsed = attr.parse_nested_meta(|meta| {
            let key = shown(&meta.path);
            let target = match key.as_str() {
                "state" => &mut options.state,
                "error" => &mut options.error,
                "continuation" => &mut options.continuation,
                _ => {
                    return unknown_key(
                        &meta,
                        errors,
                        format!(
                            "unknown key `{key}` in `#[command(..)]`; expected `state = Type`, `error = Type` or `continuation = Type`"
                        ),
                    );
                }
            };
            let ty: Type = meta.value()?.parse()?;
            if target.replace(ty).is_some() {
                errors.push(meta.error(format!("`{key}` is given twice in `#[command(..)]`")));
            }
            Ok(())
        });
        errors.check(parsed);
    }
    let example = "e.g. `#[command(state = TransferState, error = BankError)]`";
    // The whole attribute (an attribute's `span()` is only its `#` on stable).
    let at = |message: String| match input.attrs.iter().find(|a| is_attr(a, "command")) {
        Some(attr) => syn::Error::new_spanned(attr, message),
        None => syn::Error::new(input.ident.span(), message),
    };
    if !seen {
        errors.push(at(format!(
                "`#[derive(Command)]` needs `#[command(state = .., error = ..)]`: the state its slots fold into and its rejection type, {example}"
        )));
        return options;
    }
    if options.state.is_none() {
        errors.push(at(format!(
                "`#[command(..)]` is missing `state = Type`: the state the command's slots fold into, {example}"
        )));
    }
    if options.error.is_none() {
        errors.push(at(format!(
            "`#[command(..)]` is missing `error = Type`: the command's rejection type, {example}"
        )));
    }
    options
}

/// The one slot of `#[slot(Slot)]`.
fn slot_path(attr: &syn::Attribute) -> syn::Result<Path> {
    let usage = "`#[slot(..)]` names exactly one slot, e.g. `#[slot(FromAccount)]`";
    let syn::Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, usage));
    };
    let paths = list
        .parse_args_with(syn::punctuated::Punctuated::<Path, syn::Token![,]>::parse_terminated)
        .map_err(|e| syn::Error::new(e.span(), usage))?;
    let mut paths = paths.into_iter();
    match (paths.next(), paths.next()) {
        (Some(path), None) => Ok(path),
        (None, _) => Err(syn::Error::new_spanned(attr, usage)),
        (Some(_), Some(second)) => Err(syn::Error::new_spanned(
            second,
            format!("{usage}; a field binds one slot (give each slot its own field)"),
        )),
    }
}
