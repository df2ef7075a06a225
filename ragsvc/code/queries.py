"""Tree-sitter tag queries, one per language: which nodes define a name and which refer to one.

Capture names follow the tree-sitter `tags.scm` convention: `@name.definition.<kind>` on the identifier with
`@definition.<kind>` on the whole definition, and `@name.reference.<kind>` on identifiers that refer to a
definition elsewhere. Written for the grammars bundled in tree-sitter-language-pack 0.x; the patterns are
deliberately conservative (calls, instantiations, base classes, type names) so references mean something.
"""

from __future__ import annotations

PYTHON = """
(class_definition name: (identifier) @name.definition.class) @definition.class
(function_definition name: (identifier) @name.definition.function) @definition.function
(call function: [
  (identifier) @name.reference.call
  (attribute attribute: (identifier) @name.reference.call)])
(class_definition superclasses: (argument_list [
  (identifier) @name.reference.class
  (attribute attribute: (identifier) @name.reference.class)]))
(decorator [(identifier) @name.reference.call (attribute attribute: (identifier) @name.reference.call)])
"""

_JS_COMMON = """
(function_declaration name: (identifier) @name.definition.function) @definition.function
(generator_function_declaration name: (identifier) @name.definition.function) @definition.function
(method_definition name: (property_identifier) @name.definition.method) @definition.method
(lexical_declaration (variable_declarator
  name: (identifier) @name.definition.function
  value: [(arrow_function) (function_expression)])) @definition.function
(variable_declaration (variable_declarator
  name: (identifier) @name.definition.function
  value: [(arrow_function) (function_expression)])) @definition.function
(call_expression function: [
  (identifier) @name.reference.call
  (member_expression property: (property_identifier) @name.reference.call)])
(new_expression constructor: (identifier) @name.reference.class)
"""

JAVASCRIPT = _JS_COMMON + """
(class_declaration name: (identifier) @name.definition.class) @definition.class
(class_heritage (identifier) @name.reference.class)
"""

TYPESCRIPT = _JS_COMMON + """
(class_declaration name: (type_identifier) @name.definition.class) @definition.class
(abstract_class_declaration name: (type_identifier) @name.definition.class) @definition.class
(interface_declaration name: (type_identifier) @name.definition.interface) @definition.interface
(type_alias_declaration name: (type_identifier) @name.definition.type) @definition.type
(enum_declaration name: (identifier) @name.definition.type) @definition.type
(abstract_method_signature name: (property_identifier) @name.definition.method) @definition.method
(extends_clause value: (identifier) @name.reference.class)
(type_identifier) @name.reference.type
"""

GO = """
(function_declaration name: (identifier) @name.definition.function) @definition.function
(method_declaration name: (field_identifier) @name.definition.method) @definition.method
(type_declaration (type_spec name: (type_identifier) @name.definition.type)) @definition.type
(call_expression function: [
  (identifier) @name.reference.call
  (selector_expression field: (field_identifier) @name.reference.call)])
(type_identifier) @name.reference.type
"""

RUST = """
(function_item name: (identifier) @name.definition.function) @definition.function
(function_signature_item name: (identifier) @name.definition.function) @definition.function
(struct_item name: (type_identifier) @name.definition.class) @definition.class
(enum_item name: (type_identifier) @name.definition.class) @definition.class
(union_item name: (type_identifier) @name.definition.class) @definition.class
(trait_item name: (type_identifier) @name.definition.interface) @definition.interface
(type_item name: (type_identifier) @name.definition.type) @definition.type
(macro_definition name: (identifier) @name.definition.macro) @definition.macro
(impl_item type: [(type_identifier) (generic_type type: (type_identifier))] @name.definition.impl) @definition.impl
(call_expression function: [
  (identifier) @name.reference.call
  (field_expression field: (field_identifier) @name.reference.call)
  (scoped_identifier name: (identifier) @name.reference.call)])
(macro_invocation macro: (identifier) @name.reference.call)
(type_identifier) @name.reference.type
"""

JAVA = """
(class_declaration name: (identifier) @name.definition.class) @definition.class
(record_declaration name: (identifier) @name.definition.class) @definition.class
(enum_declaration name: (identifier) @name.definition.class) @definition.class
(interface_declaration name: (identifier) @name.definition.interface) @definition.interface
(method_declaration name: (identifier) @name.definition.method) @definition.method
(constructor_declaration name: (identifier) @name.definition.method) @definition.method
(method_invocation name: (identifier) @name.reference.call)
(object_creation_expression type: (type_identifier) @name.reference.class)
(type_identifier) @name.reference.type
"""

_C_FUNCTION_NAMES = "[(identifier) (field_identifier) (qualified_identifier) (destructor_name) (operator_name)]"

C = """
(function_definition declarator: (function_declarator declarator: (identifier) @name.definition.function))
  @definition.function
(function_definition declarator: (pointer_declarator declarator: (function_declarator
  declarator: (identifier) @name.definition.function))) @definition.function
(struct_specifier name: (type_identifier) @name.definition.class body: (_)) @definition.class
(union_specifier name: (type_identifier) @name.definition.class body: (_)) @definition.class
(enum_specifier name: (type_identifier) @name.definition.type body: (_)) @definition.type
(type_definition declarator: (type_identifier) @name.definition.type) @definition.type
(call_expression function: [
  (identifier) @name.reference.call
  (field_expression field: (field_identifier) @name.reference.call)])
(type_identifier) @name.reference.type
"""

CPP = f"""
(function_definition declarator: (function_declarator declarator: {_C_FUNCTION_NAMES} @name.definition.function))
  @definition.function
(function_definition declarator: (_ (function_declarator declarator: {_C_FUNCTION_NAMES} @name.definition.function)))
  @definition.function
(class_specifier name: (type_identifier) @name.definition.class body: (_)) @definition.class
(struct_specifier name: (type_identifier) @name.definition.class body: (_)) @definition.class
(enum_specifier name: (type_identifier) @name.definition.type body: (_)) @definition.type
(type_definition declarator: (type_identifier) @name.definition.type) @definition.type
(call_expression function: [
  (identifier) @name.reference.call
  (field_expression field: (field_identifier) @name.reference.call)
  (qualified_identifier name: (identifier) @name.reference.call)])
(new_expression type: (type_identifier) @name.reference.class)
(base_class_clause (type_identifier) @name.reference.class)
(type_identifier) @name.reference.type
"""

TAG_QUERIES: dict[str, str] = {
    "python": PYTHON,
    "javascript": JAVASCRIPT,
    "typescript": TYPESCRIPT,
    "tsx": TYPESCRIPT,
    "go": GO,
    "rust": RUST,
    "java": JAVA,
    "c": C,
    "cpp": CPP,
}
