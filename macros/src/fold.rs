//! `#[derive(Fold)]`: one `Fold<Slot>` impl per slot a state folds, each calling `Apply`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{Attribute, Data, DeriveInput, Member, Path, spanned::Spanned};

use crate::errors::{Errors, inner_attrs, is_attr, shown};

/// What one `#[fold(..)]` folds, and into what.
struct Target {
    /// The slot.
    slot: Path,
    /// The slot as written, for messages and to find a slot folded twice (printed once).
    name: String,
    /// The field applied to, or `None` for the state itself.
    member: Option<Member>,
    /// The field is a map keyed by stream id.
    by_stream: bool,
    /// Where a missing `Apply` is reported: the field's type, or the slot in the attribute.
    span: Span,
}

impl Target {
    fn owner(&self) -> String {
        match &self.member {
            Some(member) => format!("field `{}`", shown(member)),
            None => "the state itself".to_owned(),
        }
    }
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut targets: Vec<Target> = Vec::new();
    for attr in input.attrs.iter().filter(|a| is_attr(a, "fold")) {
        if let Some((slots, by_stream)) = errors.check(fold_args(attr)) {
            if let Some(flag) = by_stream {
                errors.push(syn::Error::new(
                    flag,
                    "`by_stream` applies to a field (a map keyed by `StreamId`), not to the whole state",
                ));
            }
            for slot in slots {
                let span = slot.span();
                let name = shown(&slot);
                add(
                    &mut targets,
                    &mut errors,
                    Target { slot, name, member: None, by_stream: false, span },
                );
            }
        }
    }
    if let Data::Struct(data) = &input.data {
        for (index, field) in data.fields.iter().enumerate() {
            let member = field.ident.clone().map_or_else(
                || Member::Unnamed(syn::Index { index: index as u32, span: field.ty.span() }),
                Member::Named,
            );
            for attr in field.attrs.iter().filter(|a| is_attr(a, "fold")) {
                let Some((slots, by_stream)) = errors.check(fold_args(attr)) else { continue };
                for slot in slots {
                    let target = Target {
                        name: shown(&slot),
                        slot,
                        member: Some(member.clone()),
                        by_stream: by_stream.is_some(),
                        span: field.ty.span(),
                    };
                    add(&mut targets, &mut errors, target);
                }
            }
        }
    }
    let misplaced = match &input.data {
        Data::Struct(_) => None,
        Data::Enum(_) => Some(
            "`#[fold(..)]` on an enum goes on the type, which folds the slots through its own `Apply`, not on a variant or a variant's field",
        ),
        Data::Union(_) => Some(
            "`#[fold(..)]` on a union goes on the type, which folds the slots through its own `Apply`, not on a field",
        ),
    };
    if let Some(message) = misplaced {
        for attr in inner_attrs(&input.data).into_iter().filter(|a| is_attr(a, "fold")) {
            errors.push(syn::Error::new_spanned(attr, message));
        }
    }
    if targets.is_empty() {
        errors.push(syn::Error::new(
            input.ident.span(),
            "`#[derive(Fold)]` found no slot to fold: mark a field `#[fold(SlotA, SlotB)]` (its type implements `Apply` for the slots' events), or the type itself when it implements `Apply`",
        ));
    }
    errors.finish()?;

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let impls = targets.iter().map(|target| {
        let slot = &target.slot;
        // Spanned at the field's type (or the slot, for the state itself): a type that does
        // not apply the slot's event is reported there, naming the event type.
        let span = target.span;
        let Some(member) = &target.member else {
            // The state itself: an empty marker impl, which the library's blanket impl makes
            // the fold. Its self type is named with the slot's span, so that a missing `Apply`
            // (the marker's supertrait) is reported at the slot.
            // The ident itself, re-spanned (a raw one, `r#Type`, stays raw).
            let mut state = ident.clone();
            state.set_span(span);
            return quote_spanned! {span=>
                impl #impl_generics ::eventcore::__derive::FoldsWhole<#slot> for #state #ty_generics #where_clause {}
            };
        };
        // A field: a `Fold` impl calling the field's `Apply` of the slot's event type.
        let apply =
            quote_spanned!(span=> ::eventcore::Apply::<<#slot as ::eventcore::Slot>::Event>::apply);
        // The arguments `event` and `stream` are the method's, spanned as they are; `self` is
        // read through `this`, spanned at the type (as in `#[derive(Command)]`'s bindings).
        let (receiver, event, stream) = (quote!(self), quote!(event), quote!(stream));
        let (stream, body) = if target.by_stream {
            (
                stream.clone(),
                quote_spanned! {span=>
                    let this = #receiver;
                    #apply(
                        this.#member.entry(::core::clone::Clone::clone(#stream)).or_default(),
                        #event,
                    )
                },
            )
        } else {
            (quote!(_stream), quote_spanned!(span=> let this = #receiver; #apply(&mut this.#member, #event)))
        };
        quote! {
            impl #impl_generics ::eventcore::Fold<#slot> for #ident #ty_generics #where_clause {
                fn fold(
                    &mut self,
                    #stream: &::eventcore::StreamId,
                    event: &<#slot as ::eventcore::Slot>::Event,
                ) {
                    #body
                }
            }
        }
    });
    Ok(quote!(#(#impls)*))
}

/// Records `target`, unless its slot is folded already.
fn add(targets: &mut Vec<Target>, errors: &mut Errors, target: Target) {
    let name = &target.name;
    match targets.iter().find(|t| t.name == *name) {
        Some(first) => errors.push(syn::Error::new_spanned(
            &target.slot,
            format!(
                "slot `{name}` is folded twice: by {} and by {}; a state folds each slot once (one `Apply` may do both)",
                first.owner(),
                target.owner()
            ),
        )),
        None => targets.push(target),
    }
}

/// The slots of `#[fold(A, B)]` and the span of a trailing `by_stream`, if any.
fn fold_args(attr: &Attribute) -> syn::Result<(Vec<Path>, Option<Span>)> {
    let usage = "`#[fold(..)]` lists the slots to fold, e.g. `#[fold(FromAccount, ToAccount)]`, and may end with `by_stream` on a map field";
    let syn::Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, usage));
    };
    let paths = list
        .parse_args_with(syn::punctuated::Punctuated::<Path, syn::Token![,]>::parse_terminated)
        .map_err(|e| syn::Error::new(e.span(), usage))?;
    let mut slots = Vec::new();
    let mut by_stream = None;
    for path in paths {
        if path.is_ident("by_stream") {
            by_stream = Some(path.span());
        } else {
            slots.push(path);
        }
    }
    if slots.is_empty() {
        return Err(syn::Error::new_spanned(attr, usage));
    }
    Ok((slots, by_stream))
}
