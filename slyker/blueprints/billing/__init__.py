"""Billing: the catalog, carts, promotions, checkout, invoices and payments, one blueprint
(module) each."""
