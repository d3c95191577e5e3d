//! `spin:variables@3.0.0` for the component: the component variables resolved at start.

use crate::app::variables::Lookup;
use crate::host::bindings::spin::variables::variables::{self as wit, Error};
use crate::host::state::Host;
use wasmtime::component::{Accessor, HasData, Linker};

pub struct VariablesHost;

impl HasData for VariablesHost {
    type Data<'a> = &'a mut Host;
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wit::add_to_linker::<Host, VariablesHost>(linker, |host| host)
}

impl<T> wit::HostWithStore<T> for VariablesHost {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> wasmtime::Result<Result<String, Error>> {
        Ok(match accessor.with(|mut access| access.get().shared.variables.get(&name)) {
            Lookup::Found(value) => Ok(value),
            Lookup::InvalidName => Err(Error::InvalidName(name)),
            Lookup::Undefined => Err(Error::Undefined(name)),
        })
    }
}

impl wit::Host for &mut Host {}
