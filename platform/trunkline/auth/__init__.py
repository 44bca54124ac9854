"""Who is calling the control plane, and what they may do.

``secrets`` issues and verifies bearer secrets; ``service`` turns a presented
access token into a :class:`~trunkline.auth.principal.Principal`; ``guards``
let each controller state the role it needs.
"""
