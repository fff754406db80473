//! The one in-code EDM model of the officeConfiguration family. It drives query validation
//! (`$filter`, `$select`, `$expand`, `$orderby`), `$metadata` (see [`super::csdl`]) and the
//! query engine, so a property added here shows up everywhere at once.
//!
//! The model is static data: look types up with [`MODEL`] (e.g. [`Model::entity_type`]) and walk
//! inheritance with [`Model::properties`], [`Model::is_derived_from`] and friends.

/// The primitive EDM types this family uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    String,
    Int32,
    Int64,
    Boolean,
    Guid,
    DateTimeOffset,
    Stream,
}

impl Primitive {
    /// The qualified EDM name, e.g. `Edm.Int32`.
    pub fn edm_name(self) -> &'static str {
        match self {
            Self::String => "Edm.String",
            Self::Int32 => "Edm.Int32",
            Self::Int64 => "Edm.Int64",
            Self::Boolean => "Edm.Boolean",
            Self::Guid => "Edm.Guid",
            Self::DateTimeOffset => "Edm.DateTimeOffset",
            Self::Stream => "Edm.Stream",
        }
    }
}

/// The element type of a property, parameter or return value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeKind {
    Primitive(Primitive),
    /// A complex type of the schema, by unqualified name.
    Complex(&'static str),
    /// An entity type of the schema, by unqualified name.
    Entity(&'static str),
}

/// A (possibly collection-valued) type reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeRef {
    pub kind: TypeKind,
    pub collection: bool,
}

impl TypeRef {
    pub const fn single(kind: TypeKind) -> Self {
        Self {
            kind,
            collection: false,
        }
    }

    pub const fn many(kind: TypeKind) -> Self {
        Self {
            kind,
            collection: true,
        }
    }

    /// The primitive type, if this is a single (non-collection) primitive value.
    pub fn scalar(&self) -> Option<Primitive> {
        match self.kind {
            TypeKind::Primitive(p) if !self.collection => Some(p),
            _ => None,
        }
    }

    /// The CSDL spelling with the schema alias: `Edm.String`, `graph.x`, `Collection(graph.x)`.
    pub fn csdl_name(&self) -> String {
        let inner = match self.kind {
            TypeKind::Primitive(p) => p.edm_name().to_string(),
            TypeKind::Complex(n) | TypeKind::Entity(n) => format!("{ALIAS}.{n}"),
        };
        if self.collection {
            format!("Collection({inner})")
        } else {
            inner
        }
    }
}

/// A structural property of an entity or complex type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub ty: TypeRef,
    pub nullable: bool,
    /// Usable in `$filter`.
    pub filterable: bool,
    /// Usable in `$orderby`.
    pub sortable: bool,
}

impl Property {
    pub fn scalar(&self) -> Option<Primitive> {
        self.ty.scalar()
    }
}

/// A navigation property; every one in this family is a contained collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NavigationProperty {
    pub name: &'static str,
    /// The target entity type (unqualified).
    pub target: &'static str,
    pub collection: bool,
    pub contains_target: bool,
}

impl NavigationProperty {
    pub fn type_ref(&self) -> TypeRef {
        TypeRef {
            kind: TypeKind::Entity(self.target),
            collection: self.collection,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityType {
    pub name: &'static str,
    pub base: Option<&'static str>,
    pub is_abstract: bool,
    /// Key property names; only declared on the root type (`entity`).
    pub key: &'static [&'static str],
    /// Declared (not inherited) properties.
    pub properties: &'static [Property],
    /// Declared (not inherited) navigation properties.
    pub navigation: &'static [NavigationProperty],
}

impl EntityType {
    /// `microsoft.graph.<name>`.
    pub fn qualified_name(&self) -> String {
        format!("{NAMESPACE}.{}", self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComplexType {
    pub name: &'static str,
    pub base: Option<&'static str>,
    pub is_abstract: bool,
    pub properties: &'static [Property],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parameter {
    pub name: &'static str,
    pub ty: TypeRef,
    pub nullable: bool,
}

/// A bound action; the first parameter is the binding parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    pub name: &'static str,
    pub parameters: &'static [Parameter],
    pub return_type: Option<TypeRef>,
}

impl Action {
    pub fn binding(&self) -> &Parameter {
        &self.parameters[0]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Singleton {
    pub name: &'static str,
    pub entity_type: &'static str,
}

/// The whole schema plus its entity container.
#[derive(Debug)]
pub struct Model {
    pub namespace: &'static str,
    pub alias: &'static str,
    pub container: &'static str,
    pub entity_types: &'static [EntityType],
    pub complex_types: &'static [ComplexType],
    pub actions: &'static [Action],
    pub singletons: &'static [Singleton],
}

pub const NAMESPACE: &str = "microsoft.graph";
pub const ALIAS: &str = "graph";

// Type names, for callers that want to avoid string typos.
pub const ENTITY: &str = "entity";
pub const OFFICE_CONFIGURATION: &str = "officeConfiguration";
pub const CLIENT_CONFIGURATION: &str = "officeClientConfiguration";
pub const WINDOWS_CONFIGURATION: &str = "windowsOfficeClientConfiguration";
pub const WINDOWS_SECURITY_CONFIGURATION: &str = "windowsOfficeClientSecurityConfiguration";
pub const ASSIGNMENT: &str = "officeClientConfigurationAssignment";
pub const CHECKIN_STATUS: &str = "officeClientCheckinStatus";
pub const USER_CHECKIN_SUMMARY: &str = "officeUserCheckinSummary";
pub const ASSIGNMENT_TARGET: &str = "officeConfigurationAssignmentTarget";
pub const GROUP_ASSIGNMENT_TARGET: &str = "officeConfigurationGroupAssignmentTarget";

const fn prim(p: Primitive) -> TypeRef {
    TypeRef::single(TypeKind::Primitive(p))
}

/// A plain property: neither filterable nor sortable.
const fn prop(name: &'static str, ty: TypeRef, nullable: bool) -> Property {
    Property {
        name,
        ty,
        nullable,
        filterable: false,
        sortable: false,
    }
}

/// A scalar usable in both `$filter` and `$orderby`.
const fn queryable(name: &'static str, ty: TypeRef, nullable: bool) -> Property {
    Property {
        name,
        ty,
        nullable,
        filterable: true,
        sortable: true,
    }
}

const STRING: TypeRef = prim(Primitive::String);

pub static MODEL: Model = Model {
    namespace: NAMESPACE,
    alias: ALIAS,
    container: "GraphService",
    entity_types: &[
        EntityType {
            name: ENTITY,
            base: None,
            is_abstract: true,
            key: &["id"],
            properties: &[queryable("id", STRING, false)],
            navigation: &[],
        },
        EntityType {
            name: OFFICE_CONFIGURATION,
            base: Some(ENTITY),
            is_abstract: false,
            key: &[],
            properties: &[
                prop(
                    "tenantCheckinStatuses",
                    TypeRef::many(TypeKind::Complex(CHECKIN_STATUS)),
                    true,
                ),
                prop(
                    "tenantUserCheckinSummary",
                    TypeRef::single(TypeKind::Complex(USER_CHECKIN_SUMMARY)),
                    true,
                ),
            ],
            navigation: &[NavigationProperty {
                name: "clientConfigurations",
                target: CLIENT_CONFIGURATION,
                collection: true,
                contains_target: true,
            }],
        },
        EntityType {
            name: CLIENT_CONFIGURATION,
            base: Some(ENTITY),
            is_abstract: true,
            key: &[],
            properties: &[
                prop(
                    "checkinStatuses",
                    TypeRef::many(TypeKind::Complex(CHECKIN_STATUS)),
                    true,
                ),
                queryable("description", STRING, true),
                queryable("displayName", STRING, true),
                queryable(
                    "lastModifiedDateTime",
                    prim(Primitive::DateTimeOffset),
                    true,
                ),
                prop("policyPayload", prim(Primitive::Stream), true),
                queryable("priority", prim(Primitive::Int32), false),
                prop(
                    "userCheckinSummary",
                    TypeRef::single(TypeKind::Complex(USER_CHECKIN_SUMMARY)),
                    true,
                ),
                prop("userPreferencePayload", prim(Primitive::Stream), true),
            ],
            navigation: &[NavigationProperty {
                name: "assignments",
                target: ASSIGNMENT,
                collection: true,
                contains_target: true,
            }],
        },
        EntityType {
            name: WINDOWS_CONFIGURATION,
            base: Some(CLIENT_CONFIGURATION),
            is_abstract: false,
            key: &[],
            properties: &[],
            navigation: &[],
        },
        EntityType {
            name: WINDOWS_SECURITY_CONFIGURATION,
            base: Some(CLIENT_CONFIGURATION),
            is_abstract: false,
            key: &[],
            properties: &[],
            navigation: &[],
        },
        EntityType {
            name: ASSIGNMENT,
            base: Some(ENTITY),
            is_abstract: false,
            key: &[],
            properties: &[prop(
                "target",
                TypeRef::single(TypeKind::Complex(ASSIGNMENT_TARGET)),
                true,
            )],
            navigation: &[],
        },
    ],
    complex_types: &[
        ComplexType {
            name: CHECKIN_STATUS,
            base: None,
            is_abstract: false,
            properties: &[
                prop(
                    "appliedPolicies",
                    TypeRef::many(TypeKind::Primitive(Primitive::String)),
                    true,
                ),
                prop("checkinDateTime", prim(Primitive::DateTimeOffset), false),
                prop("deviceName", STRING, true),
                prop("devicePlatform", STRING, true),
                prop("devicePlatformVersion", STRING, true),
                prop("errorMessage", STRING, true),
                // Not in Graph's resource pages, but in its officeConfiguration examples; cirrus
                // accepts and echoes it (DESIGN.md §1), so it is declared.
                prop("lastTaskName", STRING, true),
                prop("userId", STRING, false),
                prop("userPrincipalName", STRING, true),
                prop("wasSuccessful", prim(Primitive::Boolean), false),
            ],
        },
        ComplexType {
            name: USER_CHECKIN_SUMMARY,
            base: None,
            is_abstract: false,
            properties: &[
                prop("failedUserCount", prim(Primitive::Int32), false),
                prop("succeededUserCount", prim(Primitive::Int32), false),
            ],
        },
        ComplexType {
            name: ASSIGNMENT_TARGET,
            base: None,
            is_abstract: true,
            properties: &[],
        },
        ComplexType {
            name: GROUP_ASSIGNMENT_TARGET,
            base: Some(ASSIGNMENT_TARGET),
            is_abstract: false,
            // Filterable so `assignments/any(a: a/target/…GroupAssignmentTarget/groupId eq '…')`
            // validates; not sortable (assignments are not ordered by target).
            properties: &[Property {
                name: "groupId",
                ty: STRING,
                nullable: true,
                filterable: true,
                sortable: false,
            }],
        },
    ],
    actions: &[
        Action {
            name: "assign",
            parameters: &[
                Parameter {
                    name: "bindingParameter",
                    ty: TypeRef::single(TypeKind::Entity(CLIENT_CONFIGURATION)),
                    nullable: true,
                },
                Parameter {
                    name: "officeConfigurationAssignments",
                    ty: TypeRef::many(TypeKind::Entity(ASSIGNMENT)),
                    nullable: true,
                },
            ],
            return_type: Some(TypeRef::many(TypeKind::Entity(ASSIGNMENT))),
        },
        Action {
            name: "updatePriorities",
            parameters: &[
                Parameter {
                    name: "bindingParameter",
                    ty: TypeRef::many(TypeKind::Entity(CLIENT_CONFIGURATION)),
                    nullable: true,
                },
                Parameter {
                    name: "officeConfigurationPolicyIds",
                    ty: TypeRef::many(TypeKind::Primitive(Primitive::String)),
                    nullable: true,
                },
                Parameter {
                    name: "officeConfigurationPriorities",
                    ty: TypeRef::many(TypeKind::Primitive(Primitive::Int32)),
                    nullable: true,
                },
            ],
            return_type: None,
        },
    ],
    singletons: &[Singleton {
        name: OFFICE_CONFIGURATION,
        entity_type: OFFICE_CONFIGURATION,
    }],
};

/// Either kind of structured type, for code that walks properties of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructuredType {
    Entity(&'static EntityType),
    Complex(&'static ComplexType),
}

impl StructuredType {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Entity(t) => t.name,
            Self::Complex(t) => t.name,
        }
    }

    fn base(&self) -> Option<&'static str> {
        match self {
            Self::Entity(t) => t.base,
            Self::Complex(t) => t.base,
        }
    }

    fn declared(&self) -> &'static [Property] {
        match self {
            Self::Entity(t) => t.properties,
            Self::Complex(t) => t.properties,
        }
    }
}

impl Model {
    pub fn entity_type(&'static self, name: &str) -> Option<&'static EntityType> {
        self.entity_types.iter().find(|t| t.name == name)
    }

    pub fn complex_type(&'static self, name: &str) -> Option<&'static ComplexType> {
        self.complex_types.iter().find(|t| t.name == name)
    }

    pub fn structured_type(&'static self, name: &str) -> Option<StructuredType> {
        self.entity_type(name)
            .map(StructuredType::Entity)
            .or_else(|| self.complex_type(name).map(StructuredType::Complex))
    }

    pub fn action(&'static self, name: &str) -> Option<&'static Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn singleton(&'static self, name: &str) -> Option<&'static Singleton> {
        self.singletons.iter().find(|s| s.name == name)
    }

    /// Resolves `microsoft.graph.x`, `graph.x` or `#microsoft.graph.x` to the unqualified `x`
    /// when `x` is a type of this schema.
    pub fn resolve_qualified(&'static self, qualified: &str) -> Option<&'static str> {
        let t = qualified.strip_prefix('#').unwrap_or(qualified);
        let bare = t
            .strip_prefix("microsoft.graph.")
            .or_else(|| t.strip_prefix("graph."))?;
        self.structured_type(bare).map(|s| s.name())
    }

    /// The chain from `name` up to its root (`name` first).
    pub fn ancestry(&'static self, name: &str) -> Vec<StructuredType> {
        let mut out = Vec::new();
        let mut cur = self.structured_type(name);
        while let Some(t) = cur {
            out.push(t);
            cur = t.base().and_then(|b| self.structured_type(b));
        }
        out
    }

    /// `derived` is `base` or (transitively) derives from it.
    pub fn is_derived_from(&'static self, derived: &str, base: &str) -> bool {
        self.ancestry(derived).iter().any(|t| t.name() == base)
    }

    /// All structural properties of a type, inherited ones first (root type first).
    pub fn properties(&'static self, name: &str) -> Vec<&'static Property> {
        let mut chain = self.ancestry(name);
        chain.reverse();
        chain.iter().flat_map(|t| t.declared().iter()).collect()
    }

    pub fn property(&'static self, type_name: &str, prop: &str) -> Option<&'static Property> {
        self.ancestry(type_name)
            .iter()
            .flat_map(|t| t.declared().iter())
            .find(|p| p.name == prop)
    }

    /// All navigation properties of an entity type, inherited ones first.
    pub fn navigation_properties(&'static self, name: &str) -> Vec<&'static NavigationProperty> {
        let mut chain = self.ancestry(name);
        chain.reverse();
        chain
            .iter()
            .filter_map(|t| match t {
                StructuredType::Entity(e) => Some(e.navigation.iter()),
                StructuredType::Complex(_) => None,
            })
            .flatten()
            .collect()
    }

    pub fn navigation_property(
        &'static self,
        type_name: &str,
        nav: &str,
    ) -> Option<&'static NavigationProperty> {
        self.navigation_properties(type_name)
            .into_iter()
            .find(|n| n.name == nav)
    }

    /// The key property names of an entity type (declared on its root).
    pub fn key(&'static self, name: &str) -> &'static [&'static str] {
        self.ancestry(name)
            .iter()
            .find_map(|t| match t {
                StructuredType::Entity(e) if !e.key.is_empty() => Some(e.key),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// The non-abstract types that are `name` or derive from it (declaration order).
    pub fn concrete_types(&'static self, name: &str) -> Vec<&'static str> {
        let entities = self
            .entity_types
            .iter()
            .filter(|t| !t.is_abstract)
            .map(|t| t.name);
        let complexes = self
            .complex_types
            .iter()
            .filter(|t| !t.is_abstract)
            .map(|t| t.name);
        entities
            .chain(complexes)
            .filter(|t| self.is_derived_from(t, name))
            .collect()
    }

    /// A property name that differs from `name` only in case, for "did you mean" hints.
    pub fn similar_property(&'static self, type_name: &str, name: &str) -> Option<&'static str> {
        self.properties(type_name)
            .iter()
            .map(|p| p.name)
            .chain(self.navigation_properties(type_name).iter().map(|n| n.name))
            .find(|p| p.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inheritance_and_lookup() {
        assert!(MODEL.is_derived_from(WINDOWS_SECURITY_CONFIGURATION, CLIENT_CONFIGURATION));
        assert!(MODEL.is_derived_from(WINDOWS_CONFIGURATION, ENTITY));
        assert!(!MODEL.is_derived_from(ASSIGNMENT, CLIENT_CONFIGURATION));
        let names: Vec<_> = MODEL
            .properties(WINDOWS_CONFIGURATION)
            .iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names[0], "id");
        assert!(names.contains(&"priority"));
        assert_eq!(MODEL.key(WINDOWS_CONFIGURATION), &["id"]);
        assert_eq!(
            MODEL.concrete_types(CLIENT_CONFIGURATION),
            vec![WINDOWS_CONFIGURATION, WINDOWS_SECURITY_CONFIGURATION]
        );
        assert_eq!(
            MODEL.concrete_types(ASSIGNMENT_TARGET),
            vec![GROUP_ASSIGNMENT_TARGET]
        );
        assert_eq!(
            MODEL.resolve_qualified("#microsoft.graph.windowsOfficeClientConfiguration"),
            Some(WINDOWS_CONFIGURATION)
        );
        assert_eq!(MODEL.resolve_qualified("graph.nope"), None);
        assert_eq!(
            MODEL
                .navigation_property(WINDOWS_CONFIGURATION, "assignments")
                .map(|n| n.target),
            Some(ASSIGNMENT)
        );
        assert_eq!(
            MODEL.similar_property(CLIENT_CONFIGURATION, "DISPLAYNAME"),
            Some("displayName")
        );
    }

    #[test]
    fn queryability_flags() {
        let sortable: Vec<_> = MODEL
            .properties(CLIENT_CONFIGURATION)
            .iter()
            .filter(|p| p.sortable)
            .map(|p| p.name)
            .collect();
        assert_eq!(
            sortable,
            [
                "id",
                "description",
                "displayName",
                "lastModifiedDateTime",
                "priority"
            ]
        );
        let p = MODEL
            .property(CLIENT_CONFIGURATION, "policyPayload")
            .unwrap();
        assert!(!p.filterable && !p.sortable);
        assert!(MODEL.property(ASSIGNMENT, "id").unwrap().filterable);
        assert!(
            MODEL
                .property(GROUP_ASSIGNMENT_TARGET, "groupId")
                .unwrap()
                .filterable
        );
    }

    #[test]
    fn every_type_reference_resolves() {
        let check = |t: &TypeRef| match t.kind {
            TypeKind::Primitive(_) => {}
            TypeKind::Complex(n) => assert!(MODEL.complex_type(n).is_some(), "{n}"),
            TypeKind::Entity(n) => assert!(MODEL.entity_type(n).is_some(), "{n}"),
        };
        for t in MODEL.entity_types {
            t.properties.iter().for_each(|p| check(&p.ty));
            t.navigation.iter().for_each(|n| check(&n.type_ref()));
        }
        for t in MODEL.complex_types {
            t.properties.iter().for_each(|p| check(&p.ty));
        }
        for a in MODEL.actions {
            a.parameters.iter().for_each(|p| check(&p.ty));
            a.return_type.iter().for_each(check);
        }
    }
}
