-- Undo 20260115000000_add_landing_sections (from the incident's rollback plan)
DELETE FROM "landing_page_content" WHERE "key" IN ('how-it-works', 'social-proof');
