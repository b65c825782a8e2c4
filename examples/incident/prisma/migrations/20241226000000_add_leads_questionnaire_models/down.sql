-- Undo 20241226000000_add_leads_questionnaire_models (from the incident's rollback plan)
DROP TABLE IF EXISTS "lead_page_views" CASCADE;
DROP TABLE IF EXISTS "questionnaire_responses" CASCADE;
DROP TABLE IF EXISTS "questionnaire_questions" CASCADE;
DROP TABLE IF EXISTS "leads" CASCADE;
DROP TYPE IF EXISTS "QuestionType";
