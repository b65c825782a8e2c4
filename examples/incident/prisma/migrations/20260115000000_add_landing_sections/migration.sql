-- Add the "how it works" and "social proof" sections to the landing page.
-- Idempotent: re-running it inserts nothing twice.
INSERT INTO "landing_page_content" ("id", "key", "title", "body", "sort_order", "created_at", "updated_at") VALUES
    ('lpc_how_it_works', 'how-it-works', 'How it works', '{"steps": ["Publish a questionnaire", "Capture leads", "Follow up"]}', 30, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)
ON CONFLICT ("key") DO NOTHING;

INSERT INTO "landing_page_content" ("id", "key", "title", "body", "sort_order", "created_at", "updated_at") VALUES
    ('lpc_social_proof', 'social-proof', 'Trusted by growing teams', '{"quotes": [{"author": "Operations lead", "text": "We doubled qualified leads."}]}', 40, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)
ON CONFLICT ("key") DO NOTHING;
